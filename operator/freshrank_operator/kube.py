"""A small async Kubernetes REST client (aiohttp) for the operator's own calls.

Kopf owns the watch on RecommenderDeployments; children, Secrets, Pods and Events go through
this client with the same credentials Kopf logged in with. Children are written with
server-side apply (field manager ``freshrank-operator``, forced: the operator is the owner of
what it renders). Where the server does not create on apply (the kmock emulator answers 404),
it falls back to create; a create racing another writer (409) goes back to apply.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import tempfile
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

__all__ = [
    "FIELD_MANAGER",
    "PLURALS",
    "Conflict",
    "Credentials",
    "KubeClient",
    "KubeError",
    "NotFound",
    "ResourceTypeMissing",
    "object_path",
]

FIELD_MANAGER = "freshrank-operator"

# Every kind the operator reads or writes (no discovery round-trips on the hot path).
PLURALS: dict[str, str] = {
    "ConfigMap": "configmaps",
    "Secret": "secrets",
    "Service": "services",
    "Pod": "pods",
    "Event": "events",
    "PersistentVolumeClaim": "persistentvolumeclaims",
    "Deployment": "deployments",
    "StatefulSet": "statefulsets",
    "HorizontalPodAutoscaler": "horizontalpodautoscalers",
    "ScaledObject": "scaledobjects",
    "NetworkPolicy": "networkpolicies",
    "Lease": "leases",
    "RecommenderDeployment": "recommenderdeployments",
}


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
    """How to reach the API server (built from Kopf's ConnectionInfo by the runtime)."""

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


def object_path(
    api_version: str,
    kind: str,
    namespace: str | None,
    name: str | None = None,
    subresource: str | None = None,
) -> str:
    base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    path = base + (f"/namespaces/{namespace}" if namespace else "") + f"/{PLURALS[kind]}"
    if name:
        path += f"/{name}"
    if subresource:
        path += f"/{subresource}"
    return path


def _pem_file(data: bytes) -> str:
    # ssl wants files for client certificates; the temp file lives as long as the process.
    handle = tempfile.NamedTemporaryFile(prefix="freshrank-kube-", suffix=".pem", delete=False)  # noqa: SIM115
    handle.write(data)
    handle.close()
    return handle.name


def _ssl_context(creds: Credentials) -> ssl.SSLContext | bool:
    if not creds.server.startswith("https"):
        return False
    if creds.insecure:
        return False
    context = ssl.create_default_context(
        cafile=creds.ca_path,
        cadata=creds.ca_data.decode() if creds.ca_data else None,
    )
    cert = creds.certificate_path or (
        _pem_file(creds.certificate_data) if creds.certificate_data else None
    )
    key = creds.private_key_path or (
        _pem_file(creds.private_key_data) if creds.private_key_data else None
    )
    if cert:
        context.load_cert_chain(cert, key)
    return context


def _raise_for(status: int, body: Any) -> None:
    reason = body.get("reason", "") if isinstance(body, dict) else ""
    message = body.get("message", str(body)) if isinstance(body, dict) else str(body)
    if status == 404:
        if not (isinstance(body, dict) and body.get("kind") == "Status"):
            raise ResourceTypeMissing(status, "NotFound", message)
        raise NotFound(status, reason or "NotFound", message)
    if status == 409:
        raise Conflict(status, reason or "Conflict", message)
    raise KubeError(status, reason or "Error", message)


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
        # No total: waiting for a pooled connection under load is not the server being slow.
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=timeout, sock_read=timeout)
        self._field_manager = field_manager
        self._session: aiohttp.ClientSession | None = None
        self._creds: Credentials | None = None
        self._lock = asyncio.Lock()

    async def __aenter__(self) -> KubeClient:
        await self._connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _connect(self, *, refresh: bool = False) -> None:
        async with self._lock:
            if self._session is not None and not refresh:
                return  # another request connected meanwhile
            creds = await self._login()
            old, self._creds = self._session, creds
            headers: dict[str, str] = {"Accept": "application/json"}
            auth = None
            if creds.token:
                headers["Authorization"] = f"{creds.scheme or 'Bearer'} {creds.token}"
            elif creds.username and creds.password is not None:
                auth = aiohttp.BasicAuth(creds.username, creds.password)
            connector = aiohttp.TCPConnector(ssl=_ssl_context(creds), limit=64)
            self._session = aiohttp.ClientSession(
                base_url=creds.server.rstrip("/") + "/",
                headers=headers,
                auth=auth,
                timeout=self._timeout,
                connector=connector,
            )
            if old is not None:
                await old.close()

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: Mapping[str, str] | None = None,
        content_type: str = "application/json",
    ) -> Any:
        for attempt in range(2):
            if self._session is None:
                await self._connect()
            assert self._session is not None
            data = None if body is None else json.dumps(body)
            headers = {"Content-Type": content_type} if body is not None else {}
            async with self._session.request(
                method, path.lstrip("/"), data=data, params=params, headers=headers
            ) as response:
                if response.status == 401 and attempt == 0:
                    await self._connect(refresh=True)  # expired token: log in again, once
                    continue
                text = await response.text()
                try:
                    payload = json.loads(text) if text else {}
                except json.JSONDecodeError:
                    payload = {"message": text}
                if response.status >= 400:
                    _raise_for(response.status, payload)
                return payload
        raise KubeError(401, "Unauthorized", "login did not help")  # pragma: no cover

    # --- typed helpers -----------------------------------------------------------------------

    async def get(
        self, api_version: str, kind: str, namespace: str | None, name: str
    ) -> dict[str, Any]:
        result: dict[str, Any] = await self.request(
            "GET", object_path(api_version, kind, namespace, name)
        )
        return result

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
    ) -> list[dict[str, Any]]:
        params = {}
        if labels:
            params["labelSelector"] = ",".join(f"{k}={v}" for k, v in labels.items())
        result = await self.request("GET", object_path(api_version, kind, namespace), params=params)
        items: list[dict[str, Any]] = list(result.get("items") or [])
        # Not every server filters by label (the emulator does not): filter here as well.
        if labels:
            items = [i for i in items if _has_labels(i, labels)]
        return items

    async def create(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        meta = manifest["metadata"]
        path = object_path(manifest["apiVersion"], manifest["kind"], meta.get("namespace"))
        result: dict[str, Any] = await self.request(
            "POST", path, body=manifest, params={"fieldManager": self._field_manager}
        )
        return result

    async def apply(
        self, manifest: Mapping[str, Any], *, field_manager: str | None = None
    ) -> dict[str, Any]:
        """Server-side apply ``manifest`` (create it when the server cannot apply-create).

        Forced: the operator owns what it renders (callers check ownership first: an object
        that exists but is not the CR's is never applied over).
        """
        meta = manifest["metadata"]
        path = object_path(
            manifest["apiVersion"], manifest["kind"], meta.get("namespace"), meta["name"]
        )
        params = {"fieldManager": field_manager or self._field_manager, "force": "true"}
        for _ in range(3):
            try:
                result: dict[str, Any] = await self.request(
                    "PATCH",
                    path,
                    body=manifest,
                    params=params,
                    content_type="application/apply-patch+yaml",
                )
                return result
            except ResourceTypeMissing:
                raise
            except NotFound:
                try:
                    return await self.create(manifest)
                except Conflict:
                    continue  # created by someone else meanwhile: apply over it
        raise Conflict(409, "Conflict", f"could not apply {manifest['kind']} {meta['name']}")

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
        result: dict[str, Any] = await self.request(
            "PATCH",
            object_path(api_version, kind, namespace, name, subresource),
            body=patch,
            content_type="application/merge-patch+json",
        )
        return result

    async def delete(self, api_version: str, kind: str, namespace: str | None, name: str) -> bool:
        """Delete with background propagation; False when it was already gone."""
        try:
            await self.request(
                "DELETE",
                object_path(api_version, kind, namespace, name),
                body={"propagationPolicy": "Background"},
            )
        except NotFound:
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


def _has_labels(obj: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    actual = obj.get("metadata", {}).get("labels") or {}
    return all(actual.get(k) == v for k, v in labels.items())
