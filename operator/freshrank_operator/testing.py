"""Running the operator against kmock's KubernetesEmulator (tests and ``freshrank bench``).

Like ``kopf.testing``: not used in production; kmock is imported lazily by the caller's
fixtures. The operator runs the real Kopf runtime in its own thread and event loop (as
``kopf.testing.KopfRunner`` does), so the emulator, served from the caller's loop, behaves
like a separate API server.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator
from typing import Any

from freshrank_operator import crd
from freshrank_operator.config import OperatorConfig
from freshrank_operator.handlers import Runtime
from freshrank_operator.runtime import run_operator

__all__ = [
    "CHILD_RESOURCES",
    "CR_RESOURCE",
    "RESOURCES",
    "declare_resources",
    "emulator_config",
    "operator_thread",
]

CR_RESOURCE = f"{crd.GROUP}/{crd.VERSION}/{crd.PLURAL}"

# (resource, kind, namespaced, subresources) for every kind the operator touches.
RESOURCES: list[tuple[str, str, bool, set[str]]] = [
    (CR_RESOURCE, crd.KIND, True, {"status", "scale"}),
    ("v1/configmaps", "ConfigMap", True, set()),
    ("v1/secrets", "Secret", True, set()),
    ("v1/services", "Service", True, set()),
    ("v1/pods", "Pod", True, {"status"}),
    ("v1/events", "Event", True, set()),
    ("v1/persistentvolumeclaims", "PersistentVolumeClaim", True, set()),
    ("v1/namespaces", "Namespace", False, set()),
    ("apps/v1/deployments", "Deployment", True, {"status", "scale"}),
    ("apps/v1/statefulsets", "StatefulSet", True, {"status", "scale"}),
    ("autoscaling/v2/horizontalpodautoscalers", "HorizontalPodAutoscaler", True, {"status"}),
    ("keda.sh/v1alpha1/scaledobjects", "ScaledObject", True, {"status"}),
]

CHILD_RESOURCES = {
    "ConfigMap": "v1/configmaps",
    "Service": "v1/services",
    "PersistentVolumeClaim": "v1/persistentvolumeclaims",
    "Deployment": "apps/v1/deployments",
    "StatefulSet": "apps/v1/statefulsets",
    "HorizontalPodAutoscaler": "autoscaling/v2/horizontalpodautoscalers",
    "ScaledObject": "keda.sh/v1alpha1/scaledobjects",
}


def make_emulator(keep_requests: int = 1000) -> Any:
    """A kmock KubernetesEmulator whose request log is capped.

    kmock matches every request against its whole request history (O(history) per request),
    which makes a long run quadratic; the operator never needs more than recent history.
    """
    import kmock

    class CappedEmulator(kmock.KubernetesEmulator):
        async def _handle(self, request: Any) -> Any:
            history = self._requests
            if len(history) > 2 * keep_requests:
                del history[: len(history) - keep_requests]
            return await super()._handle(request)

    emulator = CappedEmulator()
    declare_resources(emulator)
    return emulator


def declare_resources(emulator: Any) -> None:
    """Make ``emulator`` (a kmock.KubernetesEmulator) discoverable as our cluster."""
    import kmock

    for resource, kind, namespaced, subresources in RESOURCES:
        emulator.resources[resource] = kmock.ResourceInfo(
            kind=kind,
            singular=kind.lower(),
            namespaced=namespaced,
            verbs={"get", "list", "watch", "create", "update", "patch", "delete"},
            subresources=subresources,
        )


def emulator_config(url: str, namespace: str = "default", **overrides: Any) -> OperatorConfig:
    values: dict[str, Any] = {
        "api_server": url,
        "namespaces": namespace,
        "standalone": True,
        "scanning": False,
        "tick_seconds": 0.2,
        "retry_seconds": 0.5,
        "ensure_topics": False,
        **overrides,
    }
    return OperatorConfig(**values)


@contextlib.asynccontextmanager
async def operator_thread(
    config: OperatorConfig, *, serve_metrics: bool = False
) -> AsyncIterator[Runtime]:
    """Run the operator in a thread until the block exits; re-raise what killed it."""
    runtime = Runtime(config)
    stop, ready = threading.Event(), threading.Event()
    failures: list[BaseException] = []

    def target() -> None:
        try:
            asyncio.run(
                run_operator(
                    config,
                    stop_flag=stop,
                    ready_flag=ready,
                    runtime=runtime,
                    serve_metrics=serve_metrics,
                )
            )
        except BaseException as exc:
            failures.append(exc)

    thread = threading.Thread(target=target, name="kopf-operator", daemon=True)
    thread.start()
    try:
        await asyncio.to_thread(ready.wait, 30)
        if failures:
            raise failures[0]
        if not ready.is_set():
            raise TimeoutError("the operator did not become ready in 30 s")
        yield runtime
    finally:
        stop.set()
        await asyncio.to_thread(thread.join, 30)
    if thread.is_alive():
        raise TimeoutError("the operator did not stop in 30 s")
    if failures:
        raise failures[0]
