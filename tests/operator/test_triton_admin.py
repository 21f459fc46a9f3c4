"""Each CR's Triton admin key: a Secret made once by the operator, owned by the CR, kept."""

from __future__ import annotations

import base64

import kmock
import pytest
from kube_harness import FakeApi, eventually, example_cr, running_operator

from freshrank_operator import render

pytestmark = pytest.mark.integration
NS = "default"


async def test_the_operator_creates_the_key_once_and_keeps_it(
    emulator: kmock.KubernetesEmulator, api: FakeApi
) -> None:
    name = render.triton_admin_secret_name("shop")
    async with running_operator(str(emulator.url)):
        cr = await api.create_cr(example_cr("shop"))
        secret = await eventually(lambda: api.get("v1/secrets", NS, name))
        assert secret["metadata"]["ownerReferences"][0]["uid"] == cr["metadata"]["uid"]
        key = base64.b64decode(secret["data"][render.TRITON_ADMIN_SECRET_KEY]).decode()
        assert len(key) >= 40  # 32 random bytes, URL-safe base64
        # A spec change reconciles again: the key (and so Triton's restriction) stays.
        await api.patch_spec(NS, "shop", {"trainer": {"batchSize": 512}})

        def trainer_batch_size() -> str | None:
            trainer = api.children(NS, "shop").get(("StatefulSet", "shop-trainer"))
            if trainer is None:
                return None
            env = trainer["spec"]["template"]["spec"]["containers"][0]["env"]
            return next(e["value"] for e in env if e["name"] == "FRESHRANK_BATCH_SIZE")

        await eventually(lambda: trainer_batch_size() == "512")
    assert api.versions("v1/secrets", NS, name) == 1


async def test_a_key_the_platform_team_provides_is_used_as_it_is(
    emulator: kmock.KubernetesEmulator, api: FakeApi
) -> None:
    name = render.triton_admin_secret_name("shop")
    provided = base64.b64encode(b"our-own-key").decode()
    await api.create(
        "v1/secrets",
        NS,
        {"metadata": {"name": name, "namespace": NS}, "data": {"key": provided}},
    )
    async with running_operator(str(emulator.url)):
        await api.create_cr(example_cr("shop"))
        await eventually(lambda: ("NetworkPolicy", "shop-network") in api.children(NS, "shop"))
    secret = api.get("v1/secrets", NS, name)
    assert secret is not None
    assert secret["data"]["key"] == provided
    assert api.versions("v1/secrets", NS, name) == 1
