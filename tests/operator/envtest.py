"""Tests on the real API server (envtest, the session's ``kube_cluster``): a client, namespaces,
the CRD installed, and what a test needs to read and drive the cluster.

What the emulator had to fake (validation, defaulting, uid, generation, garbage collection) the
API server and controller manager do here; what needs a kubelet (Pods running and ready) is
reported by ``ClusterApi.report_ready``, as a kubelet would, through the Pods' status.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

from lightkube.models.authentication_v1 import TokenRequestSpec
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import ServiceAccount
from waiting import eventually

from freshrank.embedded.kubernetes import EmbeddedKubernetes, KubectlError, kubeconfig_document
from freshrank_operator import crd, render
from freshrank_operator.config import OperatorConfig
from freshrank_operator.handlers import Runtime
from freshrank_operator.kube import Credentials, KubeClient
from freshrank_operator.testing import operator_thread

__all__ = [
    "CHILD_KINDS",
    "ClusterApi",
    "apiserver_metrics",
    "cluster_config",
    "credentials",
    "delete_namespace",
    "eventually",
    "example_cr",
    "grant_chart_rbac",
    "install_crd",
    "kubeconfig_for",
    "new_namespace",
    "running_operator",
    "service_account_token",
]

CRD_NAME = f"{crd.PLURAL}.{crd.GROUP}"
CHART_FILES = Path(__file__).resolve().parents[2] / "charts" / "freshrank" / "files"
_RBAC = "rbac.authorization.k8s.io/v1"
CHILD_KINDS = {
    "ConfigMap": "v1",
    "Service": "v1",
    "PersistentVolumeClaim": "v1",
    "Deployment": "apps/v1",
    "StatefulSet": "apps/v1",
    "HorizontalPodAutoscaler": "autoscaling/v2",
    "NetworkPolicy": "networking.k8s.io/v1",
}


def credentials(cluster: EmbeddedKubernetes) -> Credentials:
    return Credentials(server=cluster.server, token=cluster.token, ca_data=cluster.ca_data())


def install_crd(cluster: EmbeddedKubernetes) -> dict[str, Any]:
    """``kubectl apply --server-side -f crds/`` and wait for Established; the live CRD."""
    import yaml

    cluster.kubectl("apply", "--server-side", "-f", str(crd.crd_path()))
    # `kubectl wait` fails at once while a new CRD has no status yet, and the CRs' endpoint
    # can lag the Established condition by a moment: both are retried.
    deadline = time.monotonic() + 60
    while True:
        try:
            cluster.kubectl(
                "wait", "--for=condition=Established", "--timeout=60s", f"crd/{CRD_NAME}"
            )
            cluster.kubectl("get", CRD_NAME, "--all-namespaces")
            break
        except KubectlError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    live: dict[str, Any] = yaml.safe_load(cluster.kubectl("get", f"crd/{CRD_NAME}", "-o", "yaml"))
    return live


def example_cr(name: str, namespace: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": crd.API_VERSION,
        "kind": crd.KIND,
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"kafka": {"bootstrapServers": "127.0.0.1:9"}, **spec},
    }


async def new_namespace(client: KubeClient, labels: Mapping[str, str] | None = None) -> str:
    name = f"t-{uuid.uuid4().hex[:10]}"
    metadata = {"name": name, "labels": dict(labels or {})}
    await client.create({"apiVersion": "v1", "kind": "Namespace", "metadata": metadata})
    return name


async def delete_namespace(client: KubeClient, name: str) -> None:
    await client.delete("v1", "Namespace", None, name)


async def service_account_token(
    client: KubeClient, namespace: str, name: str, *, create: bool = True
) -> str:
    """A TokenRequest token of ServiceAccount ``namespace/name`` (created here unless
    ``create`` is False): what RBAC then allows it is what a pod of that account could do."""
    if create:
        metadata = {"name": name, "namespace": namespace}
        await client.create({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": metadata})
    request = ServiceAccount.Token(
        metadata=ObjectMeta(), spec=TokenRequestSpec(audiences=[], expirationSeconds=3600)
    )
    lightkube = await client.native()
    issued = await lightkube.create(request, name, namespace=namespace)
    assert issued.status is not None
    return issued.status.token


async def apiserver_metrics(cluster: EmbeddedKubernetes) -> str:
    """The API server's Prometheus text (a non-resource path: no client kind for it)."""
    return await asyncio.to_thread(cluster.kubectl, "get", "--raw", "/metrics")


def kubeconfig_for(cluster: EmbeddedKubernetes, token: str, path: Path) -> Path:
    """A kubeconfig for ``cluster`` that logs in with ``token``."""
    import yaml

    path.write_text(yaml.safe_dump(kubeconfig_document(cluster.server, token, cluster.ca_data())))
    return path


def cluster_config(cluster: EmbeddedKubernetes, namespace: str, **overrides: Any) -> OperatorConfig:
    """The operator's settings for a test: the cluster's kubeconfig, one namespace, fast timers."""
    values: dict[str, Any] = {
        "kubeconfig": str(cluster.kubeconfig),
        "namespaces": namespace,
        "standalone": True,
        "tick_seconds": 0.2,
        "retry_seconds": 0.5,
        "ensure_topics": False,
        **overrides,
    }
    return OperatorConfig(**values)


@contextlib.asynccontextmanager
async def running_operator(
    cluster: EmbeddedKubernetes,
    namespace: str,
    *,
    serve_metrics: bool = False,
    **overrides: Any,
) -> AsyncIterator[Runtime]:
    """The real Kopf runtime in its own thread and loop, logged in with the kubeconfig."""
    config = cluster_config(cluster, namespace, **overrides)
    async with operator_thread(config, serve_metrics=serve_metrics) as runtime:
        yield runtime


class ClusterApi:
    """One namespace of the real cluster, read and driven the way the operator tests need."""

    def __init__(self, client: KubeClient, namespace: str) -> None:
        self.client = client
        self.namespace = namespace

    async def cr(self, name: str) -> dict[str, Any] | None:
        return await self.client.get_or_none(crd.API_VERSION, crd.KIND, self.namespace, name)

    async def status(self, name: str) -> dict[str, Any]:
        return dict(((await self.cr(name)) or {}).get("status") or {})

    async def condition(self, name: str, type_: str) -> dict[str, Any]:
        status = await self.status(name)
        for condition in status.get("conditions") or []:
            if condition["type"] == type_:
                return dict(condition)
        raise AssertionError(f"no {type_} condition yet: {status}")

    async def create_cr(self, body: Mapping[str, Any]) -> dict[str, Any]:
        return await self.client.create(
            {**body, "metadata": {"namespace": self.namespace, **body["metadata"]}}
        )

    async def create_example(
        self, name: str = "shop", *, timeout: float = 60.0, **spec: Any
    ) -> dict[str, Any]:
        """``example_cr(name, **spec)`` created; returned once every child it renders exists."""
        created = await self.create_cr(example_cr(name, self.namespace, **spec))
        await eventually(lambda: self.all_children_applied(name), timeout=timeout)
        return created

    async def patch_spec(self, name: str, spec: Mapping[str, Any]) -> dict[str, Any]:
        return await self.client.merge_patch(
            crd.API_VERSION, crd.KIND, self.namespace, name, {"spec": dict(spec)}
        )

    async def delete_cr(self, name: str) -> None:
        await self.client.delete(crd.API_VERSION, crd.KIND, self.namespace, name)

    async def get(self, api_version: str, kind: str, name: str) -> dict[str, Any] | None:
        return await self.client.get_or_none(api_version, kind, self.namespace, name)

    async def create(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        body = {**manifest, "metadata": {**manifest["metadata"], "namespace": self.namespace}}
        return await self.client.create(body)

    async def children(self, name: str) -> dict[tuple[str, str], dict[str, Any]]:
        """The objects this CR owns (not the StatefulSet's claims, which carry its labels)."""
        found: dict[tuple[str, str], dict[str, Any]] = {}
        for kind, api_version in CHILD_KINDS.items():
            for obj in await self.client.list(
                api_version, kind, self.namespace, labels={"app.kubernetes.io/instance": name}
            ):
                owners = obj["metadata"].get("ownerReferences") or []
                owned = any(o["kind"] == crd.KIND and o["name"] == name for o in owners)
                if owned and not obj["metadata"].get("deletionTimestamp"):
                    found[(kind, obj["metadata"]["name"])] = obj
        return found

    async def expected_children(self, name: str) -> set[tuple[str, str]]:
        cr = await self.cr(name)
        assert cr is not None
        return {(m["kind"], m["metadata"]["name"]) for m in render.render(cr)}

    async def all_children_applied(self, name: str) -> bool:
        return set(await self.children(name)) == await self.expected_children(name)

    async def pods(self, labels: Mapping[str, str]) -> list[dict[str, Any]]:
        return await self.client.list("v1", "Pod", self.namespace, labels=labels)

    async def report_ready(
        self, name: str, *, keep_unready: int = 0, component: str | None = None
    ) -> int:
        """What kubelets would report: this CR's Pods Running and Ready. ``keep_unready`` Pods
        of ``component`` are left as they are. The count of Pods reported ready."""
        labels = {"app.kubernetes.io/instance": name}
        reported = 0
        for pod in sorted(await self.pods(labels), key=lambda p: p["metadata"]["name"]):
            pod_labels = pod["metadata"].get("labels") or {}
            if keep_unready and pod_labels.get("app.kubernetes.io/component") == component:
                keep_unready -= 1
                continue
            if not _ready(pod):
                await self._mark_ready(pod)
            reported += 1
        return reported

    async def _mark_ready(self, pod: Mapping[str, Any]) -> None:
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        conditions = [
            {"type": t, "status": "True", "lastTransitionTime": now}
            for t in ("PodScheduled", "Initialized", "ContainersReady", "Ready")
        ]
        containers = [
            {
                "name": c["name"],
                "image": c["image"],
                "imageID": "",
                "ready": True,
                "started": True,
                "restartCount": 0,
                "state": {"running": {"startedAt": now}},
            }
            for c in pod["spec"]["containers"]
        ]
        status = {
            "phase": "Running",
            "startTime": now,
            "conditions": conditions,
            "containerStatuses": containers,
        }
        await self.client.merge_patch(
            "v1",
            "Pod",
            self.namespace,
            pod["metadata"]["name"],
            {"status": status},
            subresource="status",
        )


def _ready(pod: Mapping[str, Any]) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def chart_rules(name: str) -> list[dict[str, Any]]:
    """The RBAC rules of ``charts/freshrank/files/<name>``."""
    import yaml

    rules: list[dict[str, Any]] = yaml.safe_load((CHART_FILES / name).read_text())
    return rules


async def grant_chart_rbac(client: KubeClient, namespace: str, account: str) -> str:
    """What charts/freshrank/templates/rbac.yaml renders for ``watchNamespaces=[namespace]``:
    its ClusterRole (cluster-scoped reads only) and a Role in the namespace, bound to the
    ServiceAccount ``account`` there. Returns the ClusterRole's (and its binding's) name."""
    subject = [{"kind": "ServiceAccount", "name": account, "namespace": namespace}]
    cluster_role = f"freshrank-cluster-{namespace}-{account}"
    bindings = (
        ("ClusterRole", {"name": cluster_role}, "cluster-rules.yaml"),
        ("Role", {"name": account, "namespace": namespace}, "rbac-rules.yaml"),
    )
    for kind, metadata, rules in bindings:
        await client.create(
            {"apiVersion": _RBAC, "kind": kind, "metadata": metadata, "rules": chart_rules(rules)}
        )
        role_ref = {"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": metadata["name"]}
        await client.create(
            {
                "apiVersion": _RBAC,
                "kind": f"{kind}Binding",
                "metadata": metadata,
                "roleRef": role_ref,
                "subjects": subject,
            }
        )
    return cluster_role
