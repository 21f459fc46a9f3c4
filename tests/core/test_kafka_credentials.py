"""The Kafka SASL contract: Secret keys -> credentials -> librdkafka config, pod settings."""

from __future__ import annotations

import pytest

from freshrank.core.kafka import (
    CREDENTIAL_KEYS,
    LIBRDKAFKA_LOGGER,
    AsyncConsumer,
    DeadLetters,
    KafkaCredentials,
    MissingCredential,
    admin_config,
    credentials_from_settings,
    security_config,
)
from freshrank.core.settings import CommonSettings, env_name, load_settings


def test_required_keys_only_take_the_documented_defaults() -> None:
    credentials = KafkaCredentials.from_values({"username": "alice", "password": "pw"})
    assert credentials.client_config() == {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "alice",
        "sasl.password": "pw",
    }


def test_optional_keys_override_and_empty_values_fall_back() -> None:
    values = {
        "username": "alice",
        "password": "pw",
        "mechanism": "PLAIN",
        "securityProtocol": "",
    }
    config = KafkaCredentials.from_values(values).client_config()
    assert config["sasl.mechanism"] == "PLAIN"
    assert config["security.protocol"] == "SASL_SSL"


@pytest.mark.parametrize("absent", ["username", "password"])
def test_a_missing_required_key_is_named(absent: str) -> None:
    values = {"username": "alice", "password": "pw", absent: None}
    with pytest.raises(MissingCredential) as raised:
        KafkaCredentials.from_values(values)
    assert raised.value.key == absent


def test_the_password_never_shows_in_reprs() -> None:
    credentials = KafkaCredentials.from_values({"username": "alice", "password": "s3cret"})
    assert "s3cret" not in repr(credentials)
    settings = load_settings(
        CommonSettings, environ={env_name(CommonSettings, "kafka_password"): "s3cret"}
    )
    assert "s3cret" not in repr(settings)


def test_admin_config_is_plaintext_without_credentials() -> None:
    assert admin_config("k:9092") == {
        "bootstrap.servers": "k:9092",
        "logger": LIBRDKAFKA_LOGGER,
    }
    credentials = KafkaCredentials.from_values({"username": "u", "password": "p"})
    assert admin_config("k:9092", credentials) == {
        "bootstrap.servers": "k:9092",
        "logger": LIBRDKAFKA_LOGGER,
        **credentials.client_config(),
    }


def test_pod_settings_build_the_same_credentials_as_the_secret() -> None:
    """What the operator renders as FRESHRANK_KAFKA_* is what the services read back."""
    secret = {"username": "alice", "password": "pw", "mechanism": "SCRAM-SHA-256"}
    environ = {
        env_name(CommonSettings, CREDENTIAL_KEYS[key].setting): value
        for key, value in secret.items()
    }
    settings = load_settings(CommonSettings, environ=environ)
    assert credentials_from_settings(settings) == KafkaCredentials.from_values(secret)
    assert credentials_from_settings(load_settings(CommonSettings, environ={})) is None


async def test_services_clients_take_the_pods_credentials() -> None:
    """What the trainer and the feature ingester build from FRESHRANK_KAFKA_* settings is a
    config librdkafka accepts for a consumer and a producer (no broker needed to check)."""
    environ = {
        env_name(CommonSettings, "kafka_username"): "alice",
        env_name(CommonSettings, "kafka_password"): "pw",
    }
    settings = load_settings(CommonSettings, environ=environ)
    security = security_config(settings)
    assert security == KafkaCredentials("alice", "pw").client_config()
    consumer = AsyncConsumer("127.0.0.1:1", "g", ["t"], **security)
    await consumer.close()
    DeadLetters("127.0.0.1:1", "t.dlq", **security)
    assert security_config(load_settings(CommonSettings, environ={})) == {}
