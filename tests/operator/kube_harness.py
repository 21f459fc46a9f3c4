"""Test-side API-server semantics over kmock's KubernetesEmulator, and a running operator.

The emulator stores and merges dicts; what a real API server adds that our operator relies
on is done here, on our side: CRs are validated against the CRD schema and defaulted before
they are stored, get a uid, a creationTimestamp and a generation that moves with spec changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import kmock

from freshrank_operator import crd
from freshrank_operator.handlers import Runtime
from freshrank_operator.testing import (
    CHILD_RESOURCES,
    CR_RESOURCE,
    declare_resources,
    emulator_config,
    operator_thread,
)

__all__ = [
    "CHILD_RESOURCES",
    "CR_RESOURCE",
    "FakeApi",
    "declare_resources",
    "eventually",
    "example_cr",
    "running_operator",
]


def example_cr(name: str, namespace: str = "default", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": crd.API_VERSION,
        "kind": crd.KIND,
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"kafka": {"bootstrapServers": "127.0.0.1:9"}, **spec},
    }


class FakeApi:
    """The API-server behaviour the emulator lacks, applied before objects reach it."""

    def __init__(self, emulator: kmock.KubernetesEmulator) -> None:
        self.emulator = emulator

    def _key(self, resource: str, namespace: str, name: str) -> Any:
        return (kmock.resource(resource), namespace, name)

    def get(self, resource: str, namespace: str, name: str) -> dict[str, Any] | None:
        key = self._key(resource, namespace, name)
        if key not in self.emulator.objects or self.emulator.objects[key].deleted:
            return None
        raw: dict[str, Any] = self.emulator.objects[key].raw
        return raw

    def versions(self, resource: str, namespace: str, name: str) -> int:
        """How many writes the object has seen (the emulator keeps its history)."""
        key = self._key(resource, namespace, name)
        if key not in self.emulator.objects:
            return 0
        return len([v for v in self.emulator.objects[key].history if v is not None])

    def children(self, namespace: str, name: str) -> dict[tuple[str, str], dict[str, Any]]:
        found = {}
        for kind, resource in CHILD_RESOURCES.items():
            for (res, ns, obj_name), obj in list(self.emulator.objects.items()):
                if res != kmock.resource(resource) or ns != namespace or obj.deleted:
                    continue
                labels = obj.raw.get("metadata", {}).get("labels") or {}
                if labels.get("app.kubernetes.io/instance") == name:
                    found[(kind, obj_name)] = obj.raw
        return found

    async def create_cr(self, body: Mapping[str, Any]) -> dict[str, Any]:
        errors = crd.schema_errors(body)
        if errors:
            raise ValueError("; ".join(str(e) for e in errors))
        obj = crd.apply_defaults(dict(body), crd.object_schema())
        obj["metadata"] = {
            **obj["metadata"],
            "uid": str(uuid.uuid4()),
            "generation": 1,
            "resourceVersion": "1",
            "creationTimestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        namespace = obj["metadata"]["namespace"]
        async with self.emulator.post(
            f"/apis/{crd.GROUP}/{crd.VERSION}/namespaces/{namespace}/{crd.PLURAL}", json=obj
        ) as response:
            assert response.status < 300, await response.text()
        return obj

    async def patch_spec(self, namespace: str, name: str, spec: Mapping[str, Any]) -> None:
        live = self.get(CR_RESOURCE, namespace, name)
        assert live is not None
        candidate = {**live, "spec": _merge(live["spec"], spec)}
        errors = crd.schema_errors(candidate)
        if errors:
            raise ValueError("; ".join(str(e) for e in errors))
        meta = live["metadata"]
        patch = {
            "spec": spec,
            "metadata": {
                "generation": meta["generation"] + 1,
                "resourceVersion": str(int(meta.get("resourceVersion", "1")) + 1),
            },
        }
        await self._patch(f"namespaces/{namespace}/{crd.PLURAL}/{name}", patch, crd.GROUP)

    async def _patch(self, path: str, patch: Mapping[str, Any], group: str = "") -> None:
        prefix = f"/apis/{group}/{crd.VERSION}" if group else "/api/v1"
        async with self.emulator.patch(
            f"{prefix}/{path}",
            json=patch,
            headers={"Content-Type": "application/merge-patch+json"},
        ) as response:
            assert response.status < 300, await response.text()

    async def delete_cr(self, namespace: str, name: str) -> None:
        async with self.emulator.delete(
            f"/apis/{crd.GROUP}/{crd.VERSION}/namespaces/{namespace}/{crd.PLURAL}/{name}"
        ) as response:
            assert response.status < 300, await response.text()

    async def create(self, resource: str, namespace: str, body: Mapping[str, Any]) -> None:
        group_version, plural = resource.rsplit("/", 1)
        prefix = f"/apis/{group_version}" if "/" in group_version else f"/api/{group_version}"
        async with self.emulator.post(
            f"{prefix}/namespaces/{namespace}/{plural}", json=dict(body)
        ) as response:
            assert response.status < 300, await response.text()

    async def patch_secret(self, namespace: str, name: str, patch: Mapping[str, Any]) -> None:
        await self._patch(f"namespaces/{namespace}/secrets/{name}", patch)

    async def patch_status(
        self, resource: str, namespace: str, name: str, status: Mapping[str, Any]
    ) -> None:
        """What a controller (the Deployment controller, the kubelet) would report."""
        group_version, plural = resource.rsplit("/", 1)
        prefix = f"/apis/{group_version}" if "/" in group_version else f"/api/{group_version}"
        async with self.emulator.patch(
            f"{prefix}/namespaces/{namespace}/{plural}/{name}/status",
            json={"status": dict(status)},
            headers={"Content-Type": "application/merge-patch+json"},
        ) as response:
            assert response.status < 300, await response.text()

    async def report_ready(self, namespace: str, name: str) -> None:
        """Every workload child reports all its replicas ready."""
        for (kind, child), obj in self.children(namespace, name).items():
            if kind not in {"Deployment", "StatefulSet"}:
                continue
            replicas = obj["spec"].get("replicas", 1)
            await self.patch_status(
                CHILD_RESOURCES[kind],
                namespace,
                child,
                {"replicas": replicas, "readyReplicas": replicas, "updatedReplicas": replicas},
            )


def _merge(base: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in patch.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(out[key], value)
        elif value is None:
            out.pop(key, None)
        else:
            out[key] = value
    return out


async def eventually(
    check: Callable[[], Any], *, timeout: float = 15.0, interval: float = 0.05
) -> Any:
    """Poll ``check`` until it returns a truthy value (or its AssertionError goes away)."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except AssertionError as exc:
            last = exc
        await asyncio.sleep(interval)
    if last is not None:
        raise last
    raise AssertionError(f"condition not met within {timeout}s")


@contextlib.asynccontextmanager
async def running_operator(
    url: str, *, namespace: str = "default", serve_metrics: bool = False, **overrides: Any
) -> AsyncIterator[Runtime]:
    """The real Kopf runtime in its own thread and loop (as KopfRunner runs it)."""
    config = emulator_config(url, namespace, **overrides)
    async with operator_thread(config, serve_metrics=serve_metrics) as runtime:
        yield runtime
