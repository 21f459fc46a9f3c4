"""The operator re-checks every CR against the schema: one that bypassed it is Degraded.

The one operator test left on kmock's emulator: a real API server cannot be made to store a
CR its schema rejects (tests/operator/test_envtest_crd.py shows it refusing them), but an older
CRD version or a schema edit can leave such CRs behind, and the operator must not crash on them.
"""

from __future__ import annotations

from typing import Any

import kmock
import pytest
from kube_harness import CR_RESOURCE, FakeApi, eventually, example_cr, running_operator

from freshrank_operator import crd

NS = "default"


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        # A CEL rule (x-kubernetes-validations) with its fieldPath.
        ({"autoscaling": {"minReplicas": 9, "maxReplicas": 3}}, "spec.autoscaling.minReplicas"),
        # A type inside a list, and a required field.
        (
            {"trainer": {"tolerations": [{"key": "gpu", "operator": "Maybe"}]}},
            "spec.trainer.tolerations[0].operator",
        ),
        ({"kafka": {"partitions": 3}}, "spec.kafka.bootstrapServers"),
    ],
    ids=["cel-rule", "list-item", "required"],
)
async def test_a_cr_that_bypassed_the_schema_is_degraded_not_crashed(
    emulator: kmock.KubernetesEmulator, api: FakeApi, spec: dict[str, Any], field: str
) -> None:
    body = example_cr("shop", **spec)
    body["metadata"].update({"uid": "u-1", "generation": 1, "resourceVersion": "1"})
    async with running_operator(str(emulator.url)):
        async with emulator.post(
            f"/apis/{crd.GROUP}/{crd.VERSION}/namespaces/{NS}/{crd.PLURAL}", json=body
        ) as response:
            assert response.status < 300

        def degraded() -> dict[str, object]:
            cr = api.get(CR_RESOURCE, NS, "shop") or {}
            for condition in (cr.get("status") or {}).get("conditions") or []:
                if condition["type"] == "Degraded":
                    return dict(condition)
            raise AssertionError(f"no Degraded condition yet: {cr.get('status')}")

        condition = await eventually(degraded)
        assert condition["reason"] == "InvalidSpec"
        assert str(condition["message"]).startswith(f"{field}: "), condition
        assert not api.children(NS, "shop")
