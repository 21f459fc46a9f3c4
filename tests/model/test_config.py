"""A model's shape is built from settings in one place; settings name what the registry builds."""

from __future__ import annotations

import argparse

from freshrank.core.service_settings import ARCHITECTURE_NAMES, TrainerSettings
from freshrank.model import ModelConfig
from freshrank.model.registry import ARCHITECTURES


def test_the_settings_offer_exactly_the_registered_architectures() -> None:
    assert set(ARCHITECTURE_NAMES) == set(ARCHITECTURES)


def test_model_config_from_the_trainer_settings() -> None:
    settings = TrainerSettings(architecture="mf", dim=16, history_len=7, num_users=50, num_items=9)
    assert ModelConfig.from_settings(settings) == ModelConfig(
        architecture="mf", dim=16, history_len=7, num_users=50, num_items=9
    )


def test_overrides_then_attributes_then_defaults() -> None:
    flags = argparse.Namespace(architecture="din", dim=8, rate=3.0)  # a tool's parsed flags
    config = ModelConfig.from_settings(flags, num_users=11)
    assert config == ModelConfig(architecture="din", dim=8, num_users=11)
    assert config.history_len == ModelConfig().history_len
    unset = argparse.Namespace(views=None, neighbours=0)  # a flag left at None: not given
    assert ModelConfig.from_settings(unset) == ModelConfig(neighbours=0)
