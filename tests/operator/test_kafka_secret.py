"""spec.kafka.credentialsSecret read from the real API server (envtest): credentials or a
named problem."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from envtest import ClusterApi

from freshrank.core.kafka import KafkaCredentials
from freshrank_operator import reconcile
from freshrank_operator.spec import parse_spec

pytestmark = pytest.mark.integration
SPEC = parse_spec({"kafka": {"bootstrapServers": "k:9093", "credentialsSecret": {"name": "creds"}}})


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


async def _references(api: ClusterApi) -> reconcile.References:
    return await reconcile.check_references(api.client, api.namespace, SPEC)


async def _secret(api: ClusterApi, **body: Any) -> None:
    await api.create({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds"}, **body})


async def test_base64_data_becomes_librdkafka_config(
    cluster_api: ClusterApi,
) -> None:
    data = {"username": "alice", "password": "pw", "securityProtocol": "SASL_PLAINTEXT"}
    await _secret(cluster_api, data={k: _b64(v) for k, v in data.items()})
    references = await _references(cluster_api)
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
    cluster_api: ClusterApi,
) -> None:
    await _secret(cluster_api, stringData={"username": "alice", "password": "pw"})
    assert (await _references(cluster_api)).kafka_credentials == KafkaCredentials("alice", "pw")


@pytest.mark.parametrize(
    ("body", "reason", "names"),
    [
        (None, "KafkaSecretNotFound", "Secret 'creds' not found"),
        ({"data": {"username": _b64("alice")}}, "KafkaSecretKeyMissing", "no key 'password'"),
        ({"data": {"password": _b64("pw")}}, "KafkaSecretKeyMissing", "no key 'username'"),
        # Not UTF-8 (the API server itself refuses data that is not base64).
        (
            {"data": {"username": base64.b64encode(b"\xff\xfe").decode(), "password": _b64("pw")}},
            "KafkaSecretKeyMissing",
            "unreadable",
        ),
    ],
)
async def test_a_missing_secret_or_key_is_a_problem_naming_the_field(
    cluster_api: ClusterApi,
    body: dict[str, Any] | None,
    reason: str,
    names: str,
) -> None:
    if body is not None:
        await _secret(cluster_api, **body)
    references = await _references(cluster_api)
    assert references.kafka_credentials is None
    [problem] = references.problems
    assert problem.reason == reason
    assert problem.message.startswith("spec.kafka.credentialsSecret.name: ")
    assert names in problem.message
