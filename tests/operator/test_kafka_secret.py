"""spec.kafka.credentialsSecret read from the (emulated) API: credentials or a named problem."""

from __future__ import annotations

import base64
from typing import Any

import kmock
import pytest
from kube_harness import FakeApi

from freshrank.core.kafka import KafkaCredentials
from freshrank_operator import reconcile
from freshrank_operator.kube import Credentials, KubeClient

NS = "default"
SPEC = {"kafka": {"bootstrapServers": "k:9093", "credentialsSecret": {"name": "creds"}}}


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


async def _references(emulator: kmock.KubernetesEmulator) -> reconcile.References:
    async def login() -> Credentials:
        return Credentials(server=str(emulator.url))

    async with KubeClient(login) as client:
        return await reconcile.check_references(client, NS, SPEC)


async def _secret(api: FakeApi, **body: Any) -> None:
    await api.create("v1/secrets", NS, {"metadata": {"name": "creds", "namespace": NS}, **body})


async def test_base64_data_becomes_librdkafka_config(
    emulator: kmock.KubernetesEmulator, api: FakeApi
) -> None:
    data = {"username": "alice", "password": "pw", "securityProtocol": "SASL_PLAINTEXT"}
    await _secret(api, data={k: _b64(v) for k, v in data.items()})
    references = await _references(emulator)
    assert references.problems == []
    assert references.kafka_credentials == KafkaCredentials(
        "alice", "pw", security_protocol="SASL_PLAINTEXT"
    )
    assert references.kafka_credentials.client_config() == {
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "alice",
        "sasl.password": "pw",
    }


async def test_string_data_is_read_as_written(
    emulator: kmock.KubernetesEmulator, api: FakeApi
) -> None:
    await _secret(api, stringData={"username": "alice", "password": "pw"})
    assert (await _references(emulator)).kafka_credentials == KafkaCredentials("alice", "pw")


@pytest.mark.parametrize(
    ("body", "reason", "names"),
    [
        (None, "KafkaSecretNotFound", "Secret 'creds' not found"),
        ({"data": {"username": _b64("alice")}}, "KafkaSecretKeyMissing", "no key 'password'"),
        ({"data": {"password": _b64("pw")}}, "KafkaSecretKeyMissing", "no key 'username'"),
        (
            {"data": {"username": "%%%", "password": _b64("pw")}},
            "KafkaSecretKeyMissing",
            "unreadable",
        ),
    ],
)
async def test_a_missing_secret_or_key_is_a_problem_naming_the_field(
    emulator: kmock.KubernetesEmulator,
    api: FakeApi,
    body: dict[str, Any] | None,
    reason: str,
    names: str,
) -> None:
    if body is not None:
        await _secret(api, **body)
    references = await _references(emulator)
    assert references.kafka_credentials is None
    [problem] = references.problems
    assert problem.reason == reason
    assert problem.message.startswith("spec.kafka.credentialsSecret.name: ")
    assert names in problem.message
