"""Running the operator against kmock's KubernetesEmulator (tests and ``freshrank bench``).

Like ``kopf.testing``: not used in production; kmock is imported lazily by the caller's
fixtures. The operator runs the real Kopf runtime in its own thread and event loop (as
``kopf.testing.KopfRunner`` does), so the emulator, served from the caller's loop, behaves
like a separate API server.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import threading
import typing
from collections.abc import AsyncIterator
from typing import Any

from freshrank_operator import crd, reconcile
from freshrank_operator.config import OperatorConfig
from freshrank_operator.handlers import Runtime
from freshrank_operator.kube import plural
from freshrank_operator.runtime import run_operator

__all__ = [
    "CHILD_RESOURCES",
    "CR_RESOURCE",
    "RESOURCES",
    "declare_resources",
    "emulator_config",
    "operator_thread",
]


def _resource(api_version: str, kind: str) -> str:
    """kmock's name for ``kind``'s resource (plural from the client's resource classes)."""
    return f"{api_version}/{plural(api_version, kind)}"


CR_RESOURCE = _resource(crd.API_VERSION, crd.KIND)

# (resource, kind, namespaced, subresources) for every kind the operator touches.
RESOURCES: list[tuple[str, str, bool, set[str]]] = [
    (_resource(api_version, kind), kind, namespaced, subresources)
    for api_version, kind, namespaced, subresources in (
        (crd.API_VERSION, crd.KIND, True, {"status", "scale"}),
        ("v1", "ConfigMap", True, set()),
        ("v1", "Secret", True, set()),
        ("v1", "Service", True, set()),
        ("v1", "Pod", True, {"status"}),
        ("v1", "Event", True, set()),
        ("v1", "PersistentVolumeClaim", True, set()),
        ("v1", "Namespace", False, set()),
        ("apps/v1", "Deployment", True, {"status", "scale"}),
        ("apps/v1", "StatefulSet", True, {"status", "scale"}),
        ("autoscaling/v2", "HorizontalPodAutoscaler", True, {"status"}),
        ("keda.sh/v1alpha1", "ScaledObject", True, {"status"}),
        ("networking.k8s.io/v1", "NetworkPolicy", True, set()),
    )
]

CHILD_RESOURCES = {
    kind: _resource(api_version, kind) for api_version, kind in reconcile.CHILD_KINDS
}


def make_emulator(keep_requests: int = 1000) -> Any:
    """A kmock KubernetesEmulator whose cost per request does not grow with the run.

    kmock is a test double first; profiled under the operator benchmark (100 CRs, ~1,100
    objects) it spent nearly all its CPU on bookkeeping that grows with the run (request
    history, every object scanned per request), not on serving. What this subclass changes,
    and why each is safe here (it overrides kmock 0.8 internals, so a kmock upgrade must keep
    tests/operator/test_fast_emulator.py green):

    - Routing: for each of its ~15 reactions kmock checks whether the request is in that
      reaction's view by walking the whole request log through the view's filters (the
      newest request is last), so every request cost O(reactions x log): ~85 ms at a log of
      300. Routing only needs the request being routed, so a request is in kmock's log only
      from routing until its handler starts (watch streams: until answered), and then goes
      to ``emulator.answered``, the last ``keep_requests`` answered requests, which is what
      tests assert on. (Requests queued on the emulator's lock are not in the log either.)
    - Lookups: fetch/create/patch/delete found their object by scanning every object; they
      go straight to the key (same key kmock stores it under, same equality).
    - Lists: ``labelSelector`` equality terms are honoured, as the API server does (kmock
      returns the whole namespace; clients still filter too), and the resource check uses
      the declared resources instead of walking every object per list.
    - Errors: 404/409 answers carry no server traceback (kmock formats one per error).
    - Server-side apply creates a missing object, as the API server does (kmock answers 404,
      and clients then POST: two requests where a cluster needs one).
    """
    import kmock

    class Routing(kmock.RawHandler):
        # Placed between kmock's KubernetesEmulator and RawHandler in the MRO: the request
        # enters the log just before RawHandler routes it.
        async def _handle(self, request: Any) -> Any:
            self._requests.append(request)
            return await super()._handle(request)

    class FastEmulator(kmock.KubernetesEmulator, Routing):
        answered: collections.deque[Any]
        requests_answered = 0

        async def _handle(self, request: Any) -> Any:
            _forget(self._requests, request)  # kmock logged it on arrival; Routing re-logs it
            try:
                created = await self._apply_create(request)
                if created is not None:
                    return created
                return await super()._handle(request)
            finally:
                _forget(self._requests, request)
                self.answered.append(request)
                self.requests_answered += 1
                for reaction in self._payloads:
                    reaction._requests.clear()  # each reaction's own log: never read here

        async def _apply_create(self, request: Any) -> Any:
            """Create on a server-side apply to a missing object; None for anything else."""
            content_type = request.headers.get("Content-Type", "")
            if (
                request.method != kmock.method.PATCH
                or not content_type.startswith("application/apply-patch")
                or request.resource is None
                or request.name is None
                or request.subresource is not None
                or not isinstance(request.data, dict)
            ):
                return None
            key = (request.resource, request.namespace, request.name)
            async with self._lock:
                if key in self._objects and not self._objects[key].deleted:
                    return None  # exists: kmock merges the apply as a patch
                if key in self._objects:
                    self._objects[key].create(request.data)
                else:
                    self._objects[key] = request.data
                raw = self._objects[key].raw
                await self._buses[request.resource].put({"type": "ADDED", "object": raw})
            from aiohttp import web

            return web.json_response(raw, status=201)

        def _get_resources(self) -> list[Any]:
            # Declared resources only: every object the operator touches is of one.
            resources: list[Any] = kmock.KubernetesScaffold._get_resources(self)
            return resources

        def _KubernetesEmulator__get_objs(self, request: Any, strict: bool) -> list[Any]:  # noqa: N802
            # Replaces kmock's scan over every object (a name-mangled private method).
            objects = typing.cast(_IndexedObjects, self._objects._objects)
            if request.name is not None and (strict or request.namespace is not None):
                found = objects.get((request.resource, request.namespace, request.name))
                return [] if found is None else [found]
            if strict or request.namespace is not None:
                keys = objects.in_scope(request.resource, request.namespace)
            else:
                keys = objects.of_resource(request.resource)
            return [objects[k] for k in keys if request.name is None or k[2] == request.name]

        # Routed: the request no longer needs to be in kmock's log (see above).
        async def _serve_fetch(self, request: Any) -> Any:
            _forget(self._requests, request)
            return await super()._serve_fetch(request)

        async def _serve_create(self, request: Any) -> Any:
            _forget(self._requests, request)
            return await super()._serve_create(request)

        async def _serve_update(self, request: Any) -> Any:
            _forget(self._requests, request)
            return await super()._serve_update(request)

        async def _serve_delete(self, request: Any) -> Any:
            _forget(self._requests, request)
            return await super()._serve_delete(request)

        async def _serve_list(self, request: Any) -> Any:
            _forget(self._requests, request)
            payload: Any = await super()._serve_list(request)
            terms = _equality_terms(request.params.get("labelSelector", ""))
            if terms:
                payload["items"] = [i for i in payload["items"] if _labelled(i, terms)]
            return payload

        async def _render_error(self, exc: Exception) -> Any:
            if isinstance(exc, kmock.KubernetesError) and exc.status < 500:
                from aiohttp import web

                body = {
                    "apiVersion": "v1",
                    "kind": "Status",
                    "metadata": {},
                    "code": exc.status,
                    "status": "Failure",
                    "reason": exc.reason or type(exc).__name__,
                    "message": exc.message or repr(exc),
                    "details": exc.details or {},
                }
                return web.json_response(body, status=exc.status)
            return await super()._render_error(exc)

    emulator = FastEmulator()
    emulator.answered = collections.deque(maxlen=keep_requests)
    # kmock's ObjectsArray is frozen; its backing dict is swapped for one that keeps an index.
    object.__setattr__(emulator.objects, "_objects", _IndexedObjects(emulator.objects._objects))
    declare_resources(emulator)
    return emulator


class _IndexedObjects(dict[Any, Any]):
    """kmock's object store (key: resource, namespace, name) with per-resource/namespace keys.

    kmock only assigns, deletes and clears keys, which is what is kept in step here.
    """

    def __init__(self, initial: dict[Any, Any]) -> None:
        super().__init__()
        self._scopes: dict[tuple[Any, Any], dict[Any, None]] = {}
        self._resources: dict[Any, dict[Any, None]] = {}
        for key, value in initial.items():
            self[key] = value

    def __setitem__(self, key: Any, value: Any) -> None:
        super().__setitem__(key, value)
        self._scopes.setdefault((key[0], key[1]), {})[key] = None
        self._resources.setdefault(key[0], {})[key] = None

    def __delitem__(self, key: Any) -> None:
        super().__delitem__(key)
        self._scopes.get((key[0], key[1]), {}).pop(key, None)
        self._resources.get(key[0], {}).pop(key, None)

    def clear(self) -> None:
        super().clear()
        self._scopes.clear()
        self._resources.clear()

    def in_scope(self, resource: Any, namespace: Any) -> list[Any]:
        return list(self._scopes.get((resource, namespace), ()))

    def of_resource(self, resource: Any) -> list[Any]:
        return list(self._resources.get(resource, ()))


def _forget(log: list[Any], request: Any) -> None:
    for index, logged in enumerate(log):
        if logged is request:
            del log[index]
            return


def _equality_terms(selector: str) -> dict[str, str] | None:
    """``a=b,c==d`` as a dict; None when any term is not an equality (then nothing is filtered)."""
    terms: dict[str, str] = {}
    for term in filter(None, (t.strip() for t in selector.split(","))):
        key, sep, value = term.partition("=")
        if not sep or key.endswith("!") or not key:
            return None
        terms[key.strip()] = value.lstrip("=").strip()
    return terms


def _labelled(obj: Any, terms: dict[str, str]) -> bool:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return all(labels.get(k) == v for k, v in terms.items())


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
    config: OperatorConfig, *, serve_metrics: bool = False, wait_ready: bool = True
) -> AsyncIterator[Runtime]:
    """Run the operator in a thread until the block exits; re-raise what killed it.

    ``wait_ready``: enter the block once Kopf runs (False: at once, e.g. a standby replica).
    """
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
        await asyncio.to_thread(ready.wait, 30 if wait_ready else 0)
        if failures:
            raise failures[0]
        if wait_ready and not ready.is_set():
            raise TimeoutError("the operator did not become ready in 30 s")
        yield runtime
    finally:
        stop.set()
        await asyncio.to_thread(thread.join, 30)
    if thread.is_alive():
        raise TimeoutError("the operator did not stop in 30 s")
    if failures:
        raise failures[0]
