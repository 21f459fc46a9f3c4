"""The trainer reads the environment the operator renders (names are a contract)."""

from __future__ import annotations

from typing import Any

import pytest

from freshrank.core.settings import load_settings
from freshrank.trainer.settings import TrainerSettings

OPERATOR_ENV = {
    "FRESHRANK_NAME": "shop",
    "FRESHRANK_PORT": "8082",
    "FRESHRANK_MODEL_REPOSITORY": "/models",
    "FRESHRANK_CHECKPOINT_DIR": "/checkpoints",
    "FRESHRANK_TRITON_URL": "http://shop-triton:8000",
    "FRESHRANK_ARCHITECTURE": "mf",
    "FRESHRANK_DIM": "32",
    "FRESHRANK_HISTORY_LEN": "20",
    "FRESHRANK_NUM_USERS": "100000",
    "FRESHRANK_NUM_ITEMS": "50000",
    "FRESHRANK_LEARNING_RATE": "0.001",
    "FRESHRANK_BATCH_SIZE": "512",
    "FRESHRANK_EXPORT_INTERVAL_S": "30",
    "FRESHRANK_QUALITY_METRIC": "hr@10",
    "FRESHRANK_MAX_REGRESSION": "0.05",
    "FRESHRANK_MIN_EVENTS": "1000",
    "FRESHRANK_DEVICE": "cuda",
}


def test_operator_environment_is_understood() -> None:
    settings = load_settings(TrainerSettings, environ=OPERATOR_ENV)
    assert settings.group == "shop-trainer"
    assert (settings.events_topic, settings.dlq_topic) == ("shop.events", "shop.events.dlq")
    assert settings.triton_model == "shop-ranker"
    assert settings.triton_host_port == "shop-triton:8000"
    assert (settings.batch_size, settings.num_items, settings.device) == (512, 50000, "cuda")
    assert (settings.quality_metric, settings.max_regression) == ("hr@10", 0.05)
    assert settings.export_interval_s == 30.0


@pytest.mark.parametrize(
    ("field", "value"),
    [("quality_metric", "accuracy"), ("device", "tpu"), ("keep_versions", 1), ("batch_size", 0)],
)
def test_bad_values_are_refused_with_the_field_named(field: str, value: Any) -> None:
    with pytest.raises(ValueError, match=field.split("_")[0]):
        TrainerSettings(**{field: value})


def test_the_triton_admin_key_is_read_and_never_shown() -> None:
    """The operator passes the key of Triton's control API (core.triton_auth) by env."""
    settings = load_settings(
        TrainerSettings, environ={**OPERATOR_ENV, "FRESHRANK_TRITON_ADMIN_KEY": "s3cret-key"}
    )
    assert settings.triton_admin_key.get_secret_value() == "s3cret-key"
    assert "s3cret-key" not in repr(settings)
