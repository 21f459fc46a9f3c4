"""The operator's Kubernetes calls, made with lightkube (a maintained, typed async client).

Kopf owns the watches; children, Secrets, Pods, Events, the Lease and the CR's status go through
this module, logged in with the same credentials as Kopf. It is a thin adapter: REST paths,
plurals, scopes and pagination come from lightkube's resource classes (built-in kinds) and from
the generic resources declared below for the CRDs the operator touches; authentication, TLS and
the connection pool are lightkube's (httpx). Bodies stay plain dicts, exactly as the API server
sends them: the renderers produce dicts, and the watches Kopf feeds the controller are dicts, so
the cache holds one representation (lightkube's typed models would drop any field they do not
know, and re-format timestamps).

Children are written with server-side apply (field manager ``freshrank-operator``, forced: the
operator owns what it renders); the API server creates a missing object on apply.
"""

from __future__ import annotations

import asyncio
import base64
import functools
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp
import httpx2
from lightkube import ALL_NS, AsyncClient, KubeConfig
from lightkube.codecs import resource_registry
from lightkube.config.models import Cluster, User
from lightkube.core import resource as lk_resource
from lightkube.generic_resource import (
    GenericGlobalResource,
    GenericNamespacedResource,
    create_global_resource,
    create_namespaced_resource,
)
from lightkube.types import CascadeType, PatchType

from freshrank_operator import crd

__all__ = [
    "FIELD_MANAGER",
    "Conflict",
    "Credentials",
    "KubeClient",
    "KubeError",
    "NotFound",
    "ResourceTypeMissing",
    "plural",
]

FIELD_MANAGER = "freshrank-operator"
T = TypeVar("T")

# Custom resources the operator reads or writes: lightkube knows the built-in kinds; a CRD's
# kind is declared as its CRD declares it (our own from crds/, KEDA's, Kopf's peering).
create_namespaced_resource(crd.GROUP, crd.VERSION, crd.KIND, crd.PLURAL)
create_namespaced_resource("keda.sh", "v1alpha1", "ScaledObject", "scaledobjects")
create_namespaced_resource("kopf.dev", "v1", "KopfPeering", "kopfpeerings")
create_global_resource("kopf.dev", "v1", "ClusterKopfPeering", "clusterkopfpeerings")


class KubeError(RuntimeError):
    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message


class NotFound(KubeError):
    pass


class ResourceTypeMissing(NotFound):
    """The server does not serve this kind at all (its CRD is not installed).

    The API server answers such a path with a bare ``404 page not found`` text, not the
    ``Status`` object it returns for a missing object or namespace.
    """


class Conflict(KubeError):
    pass


@dataclass(frozen=True)
class Credentials:
    """How to reach the API server (built from Kopf's ConnectionInfo by the runtime).

    ``scheme`` is kept as Kopf reports it; lightkube sends a token as ``Bearer``, the scheme
    the API server takes for tokens."""

    server: str
    token: str | None = None
    scheme: str | None = None
    username: str | None = None
    password: str | None = None
    ca_path: str | None = None
    ca_data: bytes | None = None
    certificate_path: str | None = None
    certificate_data: bytes | None = None
    private_key_path: str | None = None
    private_key_data: bytes | None = None
    insecure: bool = False
    trust_env: bool = False

    def kubeconfig(self) -> KubeConfig:
        cluster = Cluster(
            server=self.server,
            certificate_auth=self.ca_path,
            certificate_auth_data=_b64(self.ca_data),
            insecure=self.insecure,
        )
        user = User(
            token=self.token,
            username=self.username,
            password=self.password,
            client_cert=self.certificate_path,
            client_cert_data=_b64(self.certificate_data),
            client_key=self.private_key_path,
            client_key_data=_b64(self.private_key_data),
        )
        return KubeConfig.from_one(cluster=cluster, user=user)


def _b64(data: bytes | None) -> str | None:
    # kubeconfig's *-data fields are base64 (lightkube decodes them into temporary files)
    return base64.b64encode(data).decode() if data else None


@functools.cache
def _view(api_version: str, kind: str, subresource: str | None = None) -> Any:
    """lightkube's resource class for ``kind`` (its path, plural, scope), with dict bodies.

    Built-in kinds are lightkube's typed classes; the view keeps their API info and decodes
    answers as plain dicts (a generic resource), as the custom resources above already are.
    """
    resource: Any = resource_registry.load(api_version, kind)
    if subresource is not None:
        resource = getattr(resource, subresource.capitalize())  # Status, Token, Scale
    if issubclass(resource, GenericNamespacedResource | GenericGlobalResource):
        return resource
    namespaced = issubclass(
        resource, lk_resource.NamespacedResource | lk_resource.NamespacedSubResource
    )
    base = GenericNamespacedResource if namespaced else GenericGlobalResource
    return type(resource.__name__, (base,), {"_api_info": resource._api_info})


def _namespaced(api_version: str, kind: str) -> bool:
    return issubclass(_view(api_version, kind), GenericNamespacedResource)


def plural(api_version: str, kind: str) -> str:
    """``kind``'s resource name as RBAC and CRDs name it: ``deployments``, ``scaledobjects``."""
    return str(_view(api_version, kind)._api_info.plural)


def _error(exc: httpx2.HTTPStatusError) -> KubeError:
    response = exc.response
    try:
        body = response.json()
    except ValueError:
        body = None
    status = response.status_code
    if not (isinstance(body, dict) and body.get("kind") == "Status"):
        text = response.text.strip() or response.reason_phrase
        if status == 404:
            return ResourceTypeMissing(status, "NotFound", text)
        return KubeError(status, response.reason_phrase or "Error", text)
    reason, message = str(body.get("reason") or ""), str(body.get("message") or "")
    if status == 404:
        return NotFound(status, reason or "NotFound", message)
    if status == 409:
        return Conflict(status, reason or "Conflict", message)
    return KubeError(status, reason or "Error", message)


class KubeClient:
    """``async with KubeClient(login) as client``; ``login`` is re-run once on a 401."""

    def __init__(
        self,
        login: Callable[[], Awaitable[Credentials]],
        *,
        timeout: float = 30.0,
        field_manager: str = FIELD_MANAGER,
    ) -> None:
        self._login = login
        # No pool timeout: waiting for a pooled connection under load is not the server being slow.
        self._timeout = httpx2.Timeout(timeout, pool=None)
        self._field_manager = field_manager
        self._client: AsyncClient | None = None
        self._lock = asyncio.Lock()

    async def __aenter__(self) -> KubeClient:
        await self._connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    async def _connect(self, *, refresh: bool = False) -> AsyncClient:
        async with self._lock:
            if self._client is not None and not refresh:
                return self._client  # another request connected meanwhile
            creds = await self._login()
            old = self._client
            self._client = AsyncClient(
                creds.kubeconfig(),
                timeout=self._timeout,
                trust_env=creds.trust_env,
            )
            if old is not None:
                await old.close()
            return self._client

    async def native(self) -> AsyncClient:
        """The lightkube client itself, for what this adapter does not wrap (typed objects,
        subresources such as a ServiceAccount's token)."""
        return self._client or await self._connect()

    async def _call(self, operation: Callable[[AsyncClient], Awaitable[T]]) -> T:
        for attempt in range(2):
            client = await self.native()
            try:
                return await operation(client)
            except httpx2.HTTPStatusError as exc:
                if exc.response.status_code == 401 and attempt == 0:
                    await self._connect(refresh=True)  # expired token: log in again, once
                    continue
                raise _error(exc) from None
        raise KubeError(401, "Unauthorized", "login did not help")  # pragma: no cover

    # --- the operations the operator makes ---------------------------------------------------

    async def get(
        self, api_version: str, kind: str, namespace: str | None, name: str
    ) -> dict[str, Any]:
        view = _view(api_version, kind)
        found = await self._call(lambda c: c.get(view, name, namespace=namespace))
        return dict(found)

    async def get_or_none(
        self, api_version: str, kind: str, namespace: str | None, name: str
    ) -> dict[str, Any] | None:
        try:
            return await self.get(api_version, kind, namespace, name)
        except ResourceTypeMissing:
            raise  # not "no such object": no such kind (a CRD is missing)
        except NotFound:
            return None

    async def list(
        self,
        api_version: str,
        kind: str,
        namespace: str | None,
        *,
        labels: Mapping[str, str] | None = None,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        """Every object (of ``namespace``; None: of all namespaces) with ``labels``; the first
        ``limit`` only when given (one request)."""
        view = _view(api_version, kind)
        if namespace is None and _namespaced(api_version, kind):
            namespace = ALL_NS
        selector: dict[str, Any] | None = dict(labels) if labels else None

        async def collect(client: AsyncClient) -> list[dict[str, Any]]:
            items: list[dict[str, Any]] = []
            listing: AsyncIterator[Any] = aiter(
                client.list(view, namespace=namespace, labels=selector, chunk_size=limit)
            )
            async for item in listing:
                items.append(dict(item))
                if limit is not None and len(items) >= limit:
                    break
            return items

        return await self._call(collect)

    async def create(self, manifest: Mapping[str, Any], *, dry_run: bool = False) -> dict[str, Any]:
        obj = _view(manifest["apiVersion"], manifest["kind"])(manifest)
        created = await self._call(
            lambda c: c.create(obj, field_manager=self._field_manager, dry_run=dry_run)
        )
        return dict(created)

    async def replace(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        """PUT ``manifest``: with its ``metadata.resourceVersion``, a compare-and-swap."""
        obj = _view(manifest["apiVersion"], manifest["kind"])(manifest)
        replaced = await self._call(lambda c: c.replace(obj))
        return dict(replaced)

    async def apply(
        self, manifest: Mapping[str, Any], *, field_manager: str | None = None
    ) -> dict[str, Any]:
        """Server-side apply ``manifest``, forced: the operator owns what it renders (callers
        check ownership first: an object that exists but is not the CR's is never applied over).
        """
        meta = manifest["metadata"]
        view = _view(manifest["apiVersion"], manifest["kind"])
        applied = await self._call(
            lambda c: c.patch(
                view,
                meta["name"],
                dict(manifest),
                namespace=meta.get("namespace"),
                patch_type=PatchType.APPLY,
                field_manager=field_manager or self._field_manager,
                force=True,
            )
        )
        return dict(applied)

    async def merge_patch(
        self,
        api_version: str,
        kind: str,
        namespace: str | None,
        name: str,
        patch: Mapping[str, Any],
        *,
        subresource: str | None = None,
    ) -> dict[str, Any]:
        view = _view(api_version, kind, subresource)
        patched = await self._call(
            lambda c: c.patch(
                view, name, dict(patch), namespace=namespace, patch_type=PatchType.MERGE
            )
        )
        return dict(patched)

    async def delete(self, api_version: str, kind: str, namespace: str | None, name: str) -> bool:
        """Delete with background propagation; False when it was already gone."""
        view = _view(api_version, kind)
        try:
            await self._call(
                lambda c: c.delete(view, name, namespace=namespace, cascade=CascadeType.BACKGROUND)
            )
        except NotFound:
            return False
        return True

    async def served(self, api_version: str, kind: str, namespace: str | None = None) -> bool:
        """Whether the server serves ``kind`` (False: its CRD is not installed)."""
        try:
            await self.list(api_version, kind, namespace, limit=1)
        except ResourceTypeMissing:
            return False
        return True

    async def http_get_text(self, url: str, *, timeout: float = 2.0) -> str:
        """A plain GET to a pod or Prometheus (not the API server)."""
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session,
            session.get(url) as response,
        ):
            response.raise_for_status()
            return await response.text()
