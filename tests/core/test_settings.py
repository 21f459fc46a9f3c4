from __future__ import annotations

import argparse
import logging

import pytest
from pydantic import SecretStr

from freshrank.core.service_settings import FeatureSettings, RankingSettings, TrainerSettings
from freshrank.core.settings import (
    CommonSettings,
    ServerSettings,
    Settings,
    SettingsError,
    add_arguments,
    env_name,
    host_port,
    load_settings,
    opt,
    secret,
    settings_env,
)


class _Settings(ServerSettings, CommonSettings, defaults={"port": 8080}):
    verbose: bool = opt(False, "chatty")
    token: SecretStr = secret("a credential")


def _parse(argv: list[str], cls: type[Settings] = _Settings) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser, cls)
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
    with pytest.raises(SettingsError, match="FRESHRANK_PORT: Input should be a valid integer"):
        load_settings(_Settings, environ={"FRESHRANK_PORT": "eighty"})
    with pytest.raises(SettingsError, match="--verbose"):
        load_settings(_Settings, _parse(["--verbose", "maybe"]), environ={})
    with pytest.raises(SettingsError, match="FRESHRANK_PORT: Input should be less than"):
        load_settings(_Settings, environ={"FRESHRANK_PORT": "70000"})
    with pytest.raises(SettingsError, match=r"FRESHRANK_TRITON_PROTOCOL: Input should be 'http'"):
        load_settings(RankingSettings, environ={"FRESHRANK_TRITON_PROTOCOL": "pigeon"})


def test_a_rule_between_settings_names_the_class() -> None:
    with pytest.raises(SettingsError, match=r"RankingSettings: .*default_k <= max_k"):
        load_settings(
            RankingSettings, environ={"FRESHRANK_DEFAULT_K": "50", "FRESHRANK_MAX_K": "5"}
        )


def test_credentials_never_show(capsys: pytest.CaptureFixture[str]) -> None:
    settings = load_settings(_Settings, environ={"FRESHRANK_TOKEN": "s3cret"})
    assert settings.token.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(settings)
    assert "s3cret" not in str(settings.model_dump())
    parser = argparse.ArgumentParser()
    add_arguments(parser, _Settings)
    assert "--token SECRET" in parser.format_help()


def test_a_role_sets_its_own_default_without_declaring_the_setting_again() -> None:
    assert (FeatureSettings().host, FeatureSettings().port) == ("127.0.0.1", 8081)
    assert (TrainerSettings().host, TrainerSettings().port) == ("0.0.0.0", 8082)
    assert RankingSettings().port == 8080
    assert (FeatureSettings().history_len, TrainerSettings().history_len) == (50, 20)
    # The declaration (help, constraints) is the mixin's, the default the role's.
    assert FeatureSettings.model_fields["port"].description == (
        ServerSettings.model_fields["port"].description
    )
    with pytest.raises(ValueError, match="port"):
        FeatureSettings(port=-1)
    with pytest.raises(TypeError, match="unknown setting 'prot'"):

        class _Typo(ServerSettings, defaults={"prot": 1}):
            pass


def test_each_setting_is_declared_once() -> None:
    """No class redeclares a setting one of its bases has: shared ones live in one mixin."""
    for cls in (FeatureSettings, TrainerSettings, RankingSettings):
        for name in cls.model_fields:
            declaring = [c for c in cls.__mro__ if name in vars(c).get("__annotations__", {})]
            assert len(declaring) == 1, f"{cls.__name__}.{name} declared in {declaring}"


def test_env_names_come_from_the_fields() -> None:
    assert env_name(TrainerSettings, "history_len") == "FRESHRANK_HISTORY_LEN"
    assert settings_env(TrainerSettings, dim=64, debug_ledger=True) == {
        "FRESHRANK_DIM": "64",
        "FRESHRANK_DEBUG_LEDGER": "true",
    }
    with pytest.raises(KeyError, match="RankingSettings has no setting 'checkpoint_dir'"):
        env_name(RankingSettings, "checkpoint_dir")
    with pytest.raises(KeyError, match="RankingSettings has no setting 'history_len'"):
        env_name(RankingSettings, "history_len")  # ranking reads it from each export
    # What settings_env writes, load_settings reads back.
    env = settings_env(TrainerSettings, dim=64, debug_ledger=True, learning_rate=0.001)
    loaded = load_settings(TrainerSettings, environ=env)
    assert (loaded.dim, loaded.debug_ledger, loaded.learning_rate) == (64, True, 0.001)


def test_the_old_feature_history_name_still_works(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        settings = load_settings(FeatureSettings, environ={"FRESHRANK_HISTORY_LENGTH": "7"})
    assert settings.history_len == 7
    assert "FRESHRANK_HISTORY_LENGTH is deprecated: set FRESHRANK_HISTORY_LEN" in caplog.text
    both = {"FRESHRANK_HISTORY_LENGTH": "7", "FRESHRANK_HISTORY_LEN": "9"}
    assert load_settings(FeatureSettings, environ=both).history_len == 9
    flags = _parse(["--history-length", "11"], FeatureSettings)
    assert load_settings(FeatureSettings, flags, environ={}).history_len == 11


def test_host_port_accepts_urls_with_or_without_scheme() -> None:
    assert host_port("http://127.0.0.1:8000/") == "127.0.0.1:8000"
    assert host_port("https://triton:8000") == "triton:8000"
    assert host_port("127.0.0.1:8001") == "127.0.0.1:8001"


def test_settings_as_env_read_back_the_same() -> None:
    """What a parent hands a subprocess (``as_env``) is what the subprocess loads."""
    settings = TrainerSettings(
        name="shop", triton_admin_key="k3y", debug_ledger=True, quality_metric="hr@10", dim=8
    )
    assert load_settings(TrainerSettings, environ=settings.as_env()) == settings
    assert settings.as_env()["FRESHRANK_TRITON_ADMIN_KEY"] == "k3y"
