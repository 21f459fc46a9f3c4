from __future__ import annotations

import argparse
import dataclasses

import pytest

from freshrank.core.settings import (
    CommonSettings,
    SettingsError,
    add_arguments,
    host_port,
    load_settings,
    opt,
)


@dataclasses.dataclass(frozen=True, kw_only=True)
class _Settings(CommonSettings):
    port: int = opt(8080, "port")
    verbose: bool = opt(False, "chatty")


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser, _Settings)
    return parser.parse_args(argv)


def test_defaults_then_env_then_flags() -> None:
    assert load_settings(_Settings, _parse([]), environ={}).port == 8080
    env = {"FRESHRANK_PORT": "9000", "FRESHRANK_VERBOSE": "yes", "FRESHRANK_NAME": "shop"}
    from_env = load_settings(_Settings, _parse([]), environ=env)
    assert (from_env.port, from_env.verbose, from_env.name) == (9000, True, "shop")
    assert load_settings(_Settings, _parse(["--port", "7000"]), environ=env).port == 7000


def test_derived_names_follow_the_contract() -> None:
    settings = load_settings(_Settings, environ={"FRESHRANK_NAME": "shop"})
    assert settings.events_topic == "shop.events"
    assert settings.dlq_topic == "shop.events.dlq"
    assert settings.triton_model == "shop-ranker"


def test_bad_value_names_flag_or_env_var() -> None:
    with pytest.raises(SettingsError, match="FRESHRANK_PORT"):
        load_settings(_Settings, environ={"FRESHRANK_PORT": "eighty"})
    with pytest.raises(SettingsError, match="--verbose"):
        load_settings(_Settings, _parse(["--verbose", "maybe"]), environ={})


def test_host_port_accepts_urls_with_or_without_scheme() -> None:
    assert host_port("http://127.0.0.1:8000/") == "127.0.0.1:8000"
    assert host_port("https://triton:8000") == "triton:8000"
    assert host_port("127.0.0.1:8001") == "127.0.0.1:8001"
