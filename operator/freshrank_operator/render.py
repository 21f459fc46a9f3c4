"""Pure renderers: a RecommenderDeployment (its typed spec) -> the Kubernetes manifests it owns.

No I/O and no Kopf here: the same input always gives the same manifests, so reconciles are
idempotent and an update touches only the objects whose rendering changed (each manifest
carries a hash of itself in ``freshrank.io/spec-hash``; pod templates carry the hash of the
config they consume, so a config change rolls exactly the pods that read it).
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from freshrank.core.contracts import routes
from freshrank.core.contracts.metrics import REQUEST_LATENCY
from freshrank.core.service_settings import FeatureSettings, RankingSettings, TrainerSettings
from freshrank.core.settings import CommonSettings, env_name, settings_env
from freshrank.core.triton_auth import server_flags
from freshrank_operator.crd import API_VERSION, KIND
from freshrank_operator.spec import (
    Autoscaling,
    NodeSelector,
    RecommenderSpec,
    Resources,
    Tolerations,
    parse_spec,
)

__all__ = [
    "CONFIG_HASH_ANNOTATION",
    "DEFAULT_IMAGE",
    "MANAGED_BY",
    "PORTS",
    "SPEC_HASH_ANNOTATION",
    "TRITON_ADMIN_ENV",
    "TRITON_ADMIN_SECRET_KEY",
    "Desired",
    "child_key",
    "cuda_variant",
    "manifest_hash",
    "render",
    "selector_labels",
    "triton_admin_secret",
    "triton_admin_secret_name",
]

Manifest = dict[str, Any]

DEFAULT_IMAGE = "ghcr.io/freshrank/freshrank:0.1.0"
MANAGED_BY = "freshrank-operator"
SPEC_HASH_ANNOTATION = "freshrank.io/spec-hash"
CONFIG_HASH_ANNOTATION = "freshrank.io/config-hash"
PORTS = {"ranking": 8080, "feature": 8081, "trainer": 8082}
TRITON_PORTS = {"http": 8000, "grpc": 8001, "metrics": 8002}
MODELS_MOUNT = "/models"
CHECKPOINTS_MOUNT = "/checkpoints"
FEATURE_DATA_MOUNT = "/data"
GPU_RESOURCE = "nvidia.com/gpu"
# Users the images run as (Pod Security "restricted" wants them non-root, and the kubelet can
# only verify that for a numeric user): ours is USER 10001 (Dockerfile); NVIDIA's tritonserver
# image runs as root unless told, and ships the user triton-server, uid 1000.
SERVICE_UID = 10001
TRITON_UID = 1000
TMP_MOUNT = "/tmp"
# Triton's restricted control APIs (core.triton_auth) take their key from this Secret, which
# the operator creates once per CR (reconcile cannot render a random value: renders are pure).
TRITON_ADMIN_SECRET_KEY = "key"
# The trainer's setting; Triton's pod gets the same variable (its args expand it).
TRITON_ADMIN_ENV = env_name(TrainerSettings, "triton_admin_key")
DATABASE_URL_ENV = env_name(FeatureSettings, "database_url")


@dataclass(frozen=True)
class Desired:
    """What the renderer needs besides the CR: decisions that live outside the spec."""

    default_image: str = DEFAULT_IMAGE
    # The autoscaler's current decision for the ranking Deployment (operator engine only);
    # None means "start from spec.ranking.replicas".
    ranking_replicas: int | None = None
    # The operator's own namespace: its pods may scrape the trainer's metrics through the
    # CR's NetworkPolicy. None (operator outside the cluster, or unknown): operator pods of
    # any namespace.
    operator_namespace: str | None = None


def manifest_hash(manifest: Mapping[str, Any]) -> str:
    """A stable hash of a manifest's content (its own hash annotation excluded)."""
    body = dict(manifest)  # shallow: only the metadata path to the annotation is rebuilt
    if isinstance(body.get("metadata"), Mapping):
        metadata = dict(body["metadata"])
        annotations = metadata.get("annotations")
        if isinstance(annotations, Mapping) and SPEC_HASH_ANNOTATION in annotations:
            metadata["annotations"] = {
                k: v for k, v in annotations.items() if k != SPEC_HASH_ANNOTATION
            }
        body["metadata"] = metadata
    encoded = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(encoded).hexdigest()[:16]


def cuda_variant(image: str) -> str:
    """The CUDA build of a freshrank image: the same tag with ``-cuda`` (Dockerfile's
    ``TORCH_VARIANT`` build arg). A digest names one build, so it is used as it is."""
    if "@" in image:
        return image
    repository, _, tag = image.rpartition(":")
    if not repository or "/" in tag:  # no tag: "registry:5000/freshrank" has a port, not a tag
        return f"{image}:latest-cuda"
    return f"{repository}:{tag}-cuda"


def child_key(manifest: Mapping[str, Any]) -> tuple[str, str, str]:
    """(apiVersion, kind, name): what identifies a child within its namespace."""
    return manifest["apiVersion"], manifest["kind"], manifest["metadata"]["name"]


def selector_labels(name: str, component: str) -> dict[str, str]:
    return {"app.kubernetes.io/instance": name, "app.kubernetes.io/component": component}


def triton_admin_secret_name(name: str) -> str:
    """The Secret holding the key of the CR's Triton control API (created by the operator)."""
    return f"{name}-triton-admin"


@dataclass(frozen=True)
class _Owner:
    """The CR as the owner of its children: what names and labels them."""

    name: str
    namespace: str
    uid: str

    def child(self, role: str) -> str:
        return f"{self.name}-{role}"


@dataclass(frozen=True)
class _Cr(_Owner):
    spec: RecommenderSpec
    desired: Desired

    @property
    def image(self) -> str:
        return self.spec.image or self.desired.default_image


def render(
    cr: Mapping[str, Any],
    desired: Desired | None = None,
    *,
    spec: RecommenderSpec | None = None,
) -> list[Manifest]:
    """Every child object of ``cr`` (a RecommenderDeployment as read from the API).

    ``spec``: ``cr``'s spec already parsed (the controller parses once per generation);
    without it the spec is parsed here (``spec.InvalidSpec`` when the schema rejects it).
    """
    meta = cr["metadata"]
    ctx = _Cr(
        name=meta["name"],
        namespace=meta["namespace"],
        uid=meta["uid"],
        spec=spec if spec is not None else parse_spec(cr.get("spec") or {}),
        desired=desired or Desired(),
    )
    config = _config_map(ctx)
    config_hash = manifest_hash(config["data"])
    manifests: list[Manifest] = [config]
    manifests += _feature(ctx, config_hash)
    manifests += _model_repository_claim(ctx)
    manifests += _trainer(ctx, config_hash)
    manifests += _triton(ctx)
    manifests += _ranking(ctx, config_hash)
    manifests += _autoscaler_objects(ctx)
    manifests.append(_network_policy(ctx))
    for manifest in manifests:
        manifest["metadata"]["annotations"][SPEC_HASH_ANNOTATION] = manifest_hash(manifest)
    return manifests


def triton_admin_secret(cr: Mapping[str, Any], key: str) -> Manifest:
    """The Secret with the key of the CR's Triton control API, owned by the CR.

    Not part of ``render``: the key is random, made once when the Secret is first created
    (``freshrank_operator.triton_admin``), and never rendered again (a rendering is pure).
    """
    meta = cr["metadata"]
    owner = _Owner(meta["name"], meta["namespace"], meta["uid"])
    metadata = _metadata(owner, triton_admin_secret_name(owner.name), "triton")
    del metadata["annotations"]
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata,
        "type": "Opaque",
        "data": {TRITON_ADMIN_SECRET_KEY: base64.b64encode(key.encode()).decode()},
    }


# --- shared pieces ---------------------------------------------------------------------------


def _metadata(ctx: _Owner, name: str, component: str) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": ctx.namespace,
        "labels": {
            "app.kubernetes.io/name": "freshrank",
            "app.kubernetes.io/part-of": "freshrank",
            "app.kubernetes.io/managed-by": MANAGED_BY,
            **selector_labels(ctx.name, component),
        },
        "annotations": {},
        "ownerReferences": [
            {
                "apiVersion": API_VERSION,
                "kind": KIND,
                "name": ctx.name,
                "uid": ctx.uid,
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ],
    }


def _resources(spec: Resources | None, gpus: int = 0) -> dict[str, Any]:
    resources: dict[str, Any] = {}
    if spec is not None and spec.requests:
        resources["requests"] = dict(spec.requests)
    if spec is not None and spec.limits:
        resources["limits"] = dict(spec.limits)
    if gpus > 0:
        # GPUs are extended resources: requested through limits only.
        resources.setdefault("limits", {})[GPU_RESOURCE] = gpus
    return resources


def _gpu_scheduling(
    node_selector: NodeSelector | None, given: Tolerations | None, gpus: int
) -> dict[str, Any]:
    pod: dict[str, Any] = {}
    if node_selector:
        pod["nodeSelector"] = dict(node_selector)
    tolerations = [t.model_dump(by_alias=True, exclude_none=True) for t in given or []]
    if gpus > 0 and not any(t.key == GPU_RESOURCE for t in given or []):
        # GPU node pools are commonly tainted with nvidia.com/gpu; tolerate it by default.
        tolerations.append({"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"})
    if tolerations:
        pod["tolerations"] = tolerations
    return pod


def _probes(port: int | str) -> dict[str, Any]:
    return {
        "readinessProbe": {
            "httpGet": {"path": routes.READY, "port": port},
            "periodSeconds": 5,
            "failureThreshold": 3,
        },
        "livenessProbe": {
            "httpGet": {"path": routes.HEALTH, "port": port},
            "periodSeconds": 10,
            "failureThreshold": 6,
        },
    }


def _container_security() -> dict[str, Any]:
    """Pod Security "restricted", per container; the root filesystem is read-only (every
    pod gets a writable /tmp, and data lives on its volumes)."""
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }


def _pod_security(uid: int, *, writes_volumes: bool) -> dict[str, Any]:
    """Pod Security "restricted", per pod: a numeric non-root user and the runtime's seccomp.

    ``writes_volumes``: the pod writes its persistent volumes, so they are given to the
    user's group (``fsGroup``; only when the root's group differs, not a chown of every file
    at each start). Readers (Triton, ranking) read what the trainer wrote as "other".
    """
    security: dict[str, Any] = {
        "runAsNonRoot": True,
        "runAsUser": uid,
        "runAsGroup": uid,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    if writes_volumes:
        security["fsGroup"] = uid
        security["fsGroupChangePolicy"] = "OnRootMismatch"
    return security


def _tmp_volume() -> tuple[dict[str, Any], dict[str, Any]]:
    """(volume, mount) of the writable scratch directory a read-only root needs."""
    return (
        {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}},
        {"name": "tmp", "mountPath": TMP_MOUNT},
    )


def _env(values: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [{"name": key, "value": str(value)} for key, value in values.items()]


def _kafka_credentials_env(ctx: _Cr) -> list[dict[str, Any]]:
    """``spec.kafka.credentialsSecret``'s keys as the services' ``FRESHRANK_KAFKA_*`` settings.

    Key names, settings and which keys are optional come from ``core.kafka.CREDENTIAL_KEYS``,
    the same table the operator reads the Secret with for its own admin client.
    """
    from freshrank.core.kafka import CREDENTIAL_KEYS

    secret = ctx.spec.kafka.credentials_secret
    if secret is None:
        return []
    return [
        {
            "name": env_name(CommonSettings, field.setting),
            "valueFrom": {
                "secretKeyRef": {
                    "name": secret.name,
                    "key": key,
                    **({} if field.required else {"optional": True}),
                }
            },
        }
        for key, field in CREDENTIAL_KEYS.items()
    ]


def _triton_admin_key_env(ctx: _Cr) -> dict[str, Any]:
    return {
        "name": TRITON_ADMIN_ENV,
        "valueFrom": {
            "secretKeyRef": {
                "name": triton_admin_secret_name(ctx.name),
                "key": TRITON_ADMIN_SECRET_KEY,
            }
        },
    }


def _service_container(
    ctx: _Cr,
    role: str,
    env: Mapping[str, Any],
    resources: dict[str, Any],
    *,
    kafka: bool = True,
) -> dict[str, Any]:
    """``kafka``: the role talks to Kafka and gets the credentials (ranking never does)."""
    env_from: list[dict[str, Any]] = [{"configMapRef": {"name": ctx.child("config")}}]
    container: dict[str, Any] = {
        "name": role,
        "image": ctx.image,
        "imagePullPolicy": ctx.spec.image_pull_policy,
        "args": [role],
        "ports": [{"name": "http", "containerPort": PORTS[role], "protocol": "TCP"}],
        "envFrom": env_from,
        "env": _env(env) + (_kafka_credentials_env(ctx) if kafka else []),
        "securityContext": _container_security(),
        **_probes("http"),
    }
    if resources:
        container["resources"] = resources
    return container


def _mount_models(
    ctx: _Cr, container: dict[str, Any], volumes: list[dict[str, Any]], *, read_only: bool
) -> None:
    """Mount the model repository into ``container`` when it is a volume (not a URL)."""
    models = _models_volume(ctx)
    if models is None:
        return
    mount: dict[str, Any] = {"name": "models", "mountPath": MODELS_MOUNT}
    if read_only:
        mount["readOnly"] = True
    container.setdefault("volumeMounts", []).append(mount)
    volumes.append(models)


def _pod_template(
    ctx: _Cr,
    component: str,
    container: dict[str, Any],
    config_hash: str | None,
    *,
    uid: int,
    writes_volumes: bool,
    volumes: list[dict[str, Any]],
) -> dict[str, Any]:
    """A pod of one container that passes Pod Security "restricted": ``uid`` for the pod
    (``_pod_security``), a read-only root with a writable /tmp, and no API token (no service
    calls the Kubernetes API; the operator does that from its own pod)."""
    metadata: dict[str, Any] = {"labels": selector_labels(ctx.name, component)}
    if config_hash is not None:
        metadata["annotations"] = {CONFIG_HASH_ANNOTATION: config_hash}
    tmp_volume, tmp_mount = _tmp_volume()
    container.setdefault("volumeMounts", []).append(tmp_mount)
    return {
        "metadata": metadata,
        "spec": {
            "automountServiceAccountToken": False,
            "securityContext": _pod_security(uid, writes_volumes=writes_volumes),
            "containers": [container],
            "volumes": [*volumes, tmp_volume],
        },
    }


def _deployment(
    ctx: _Cr, component: str, template: dict[str, Any], replicas: int | None
) -> Manifest:
    spec: dict[str, Any] = {
        "selector": {"matchLabels": selector_labels(ctx.name, component)},
        "template": template,
    }
    if replicas is not None:
        spec["replicas"] = replicas
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(ctx, ctx.child(component), component),
        "spec": spec,
    }


def _service(
    ctx: _Cr, component: str, ports: Mapping[str, int], *, headless: bool = False
) -> Manifest:
    spec: dict[str, Any] = {
        "selector": selector_labels(ctx.name, component),
        "ports": [
            {"name": port_name, "port": port, "targetPort": port, "protocol": "TCP"}
            for port_name, port in ports.items()
        ],
    }
    if headless:
        spec["clusterIP"] = "None"
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(ctx, ctx.child(component), component),
        "spec": spec,
    }


def _claim_spec(size: str, access: str, cls: str | None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "accessModes": [access],
        "resources": {"requests": {"storage": size}},
    }
    if cls:
        spec["storageClassName"] = cls
    return spec


def _claim(
    ctx: _Cr, name: str, component: str, size: str, access: str, cls: str | None
) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": _metadata(ctx, name, component),
        "spec": _claim_spec(size, access, cls),
    }


# --- the children ----------------------------------------------------------------------------


def _config_map(ctx: _Cr) -> Manifest:
    telemetry = ctx.spec.telemetry
    data = {
        **settings_env(
            CommonSettings,
            name=ctx.name,
            bootstrap_servers=ctx.spec.kafka.bootstrap_servers,
            otlp_endpoint=telemetry.otlp_endpoint,
            trace_sample_ratio=str(telemetry.sample_ratio),
            log_level=telemetry.log_level,
        ),
        "OTEL_EXPORTER_OTLP_ENDPOINT": telemetry.otlp_endpoint,
    }
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(ctx, ctx.child("config"), "config"),
        "data": data,
    }


def _feature(ctx: _Cr, config_hash: str) -> list[Manifest]:
    store = ctx.spec.feature_store
    env = settings_env(
        FeatureSettings,
        host="0.0.0.0",
        port=PORTS["feature"],
        history_len=ctx.spec.model.history_length,
    )
    volumes: list[dict[str, Any]] = []
    mounts: list[dict[str, Any]] = []
    manifests: list[Manifest] = []
    if store.dsn_secret is None:
        # SQLite, the embedded default: one writer on a persistent volume.
        env[DATABASE_URL_ENV] = f"sqlite+aiosqlite:///{FEATURE_DATA_MOUNT}/features.db"
        claim = ctx.child("feature-data")
        manifests.append(_claim(ctx, claim, "feature", "1Gi", "ReadWriteOnce", None))
        volumes.append({"name": "data", "persistentVolumeClaim": {"claimName": claim}})
        mounts.append({"name": "data", "mountPath": FEATURE_DATA_MOUNT})
    container = _service_container(ctx, "feature", env, _resources(store.resources))
    secret = store.dsn_secret
    if secret is not None:
        container["env"].append(
            {
                "name": DATABASE_URL_ENV,
                "valueFrom": {"secretKeyRef": {"name": secret.name, "key": secret.key}},
            }
        )
    container["volumeMounts"] = mounts
    template = _pod_template(
        ctx,
        "feature",
        container,
        config_hash,
        uid=SERVICE_UID,
        writes_volumes=bool(volumes),
        volumes=volumes,
    )
    deployment = _deployment(ctx, "feature", template, store.replicas)
    if secret is None:
        # A single-writer volume must never have two pods at once.
        deployment["spec"]["strategy"] = {"type": "Recreate"}
    manifests.append(deployment)
    manifests.append(_service(ctx, "feature", {"http": PORTS["feature"]}))
    return manifests


def _models_volume(ctx: _Cr) -> dict[str, Any] | None:
    repository = ctx.spec.triton.model_repository
    if repository.url:
        return None
    claim = repository.claim_name or ctx.child("models")
    return {"name": "models", "persistentVolumeClaim": {"claimName": claim}}


def _model_repository_location(ctx: _Cr) -> str:
    return ctx.spec.triton.model_repository.url or MODELS_MOUNT


def _model_repository_claim(ctx: _Cr) -> list[Manifest]:
    repository = ctx.spec.triton.model_repository
    if repository.url or repository.claim_name:
        return []
    # Trainer writes, Triton reads: both mount it, possibly on different nodes.
    claim = _claim(
        ctx,
        ctx.child("models"),
        "models",
        repository.size,
        "ReadWriteMany",
        repository.storage_class_name,
    )
    return [claim]


def _trainer(ctx: _Cr, config_hash: str) -> list[Manifest]:
    trainer, model = ctx.spec.trainer, ctx.spec.model
    gate = trainer.quality_gate
    env = settings_env(
        TrainerSettings,
        port=PORTS["trainer"],
        model_repository=_model_repository_location(ctx),
        checkpoint_dir=CHECKPOINTS_MOUNT,
        triton_url=f"{ctx.child('triton')}:{TRITON_PORTS['http']}",
        architecture=model.architecture,
        dim=model.dim,
        history_len=model.history_length,
        views=model.views,
        neighbours=model.neighbours,
        num_users=model.num_users,
        num_items=model.num_items,
        learning_rate=model.learning_rate,
        batch_size=trainer.batch_size,
        export_interval_s=trainer.export_interval_seconds,
        quality_metric=gate.metric,
        max_regression=gate.max_regression,
        min_events=gate.min_events,
        device="cuda" if trainer.gpus > 0 else "cpu",
    )
    container = _service_container(ctx, "trainer", env, _resources(trainer.resources, trainer.gpus))
    container["image"] = trainer.image or (
        cuda_variant(ctx.image) if trainer.gpus > 0 else ctx.image
    )
    container["env"].append(_triton_admin_key_env(ctx))  # it loads each version it exports
    container["volumeMounts"] = [{"name": "checkpoints", "mountPath": CHECKPOINTS_MOUNT}]
    volumes: list[dict[str, Any]] = []
    _mount_models(ctx, container, volumes, read_only=False)
    template = _pod_template(
        ctx,
        "trainer",
        container,
        config_hash,
        uid=SERVICE_UID,
        writes_volumes=True,
        volumes=volumes,
    )
    template["spec"].update(
        _gpu_scheduling(trainer.node_selector, trainer.tolerations, trainer.gpus)
    )
    checkpoint = trainer.checkpoint
    claim_spec = _claim_spec(checkpoint.size, "ReadWriteOnce", checkpoint.storage_class_name)
    statefulset: Manifest = {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": _metadata(ctx, ctx.child("trainer"), "trainer"),
        "spec": {
            # One consumer group member owns the checkpoint (model, optimizer, offsets).
            "replicas": 1,
            "serviceName": ctx.child("trainer"),
            # Deleting the deployment deletes its checkpoints too: nothing is left orphaned.
            "persistentVolumeClaimRetentionPolicy": {
                "whenDeleted": "Delete",
                "whenScaled": "Retain",
            },
            "selector": {"matchLabels": selector_labels(ctx.name, "trainer")},
            "template": template,
            "volumeClaimTemplates": [
                {"metadata": {"name": "checkpoints"}, "spec": claim_spec},
            ],
        },
    }
    service = _service(ctx, "trainer", {"http": PORTS["trainer"]}, headless=True)
    return [statefulset, service]


def _triton(ctx: _Cr) -> list[Manifest]:
    triton = ctx.spec.triton
    gpus = triton.gpus
    args = [
        "tritonserver",
        f"--model-repository={_model_repository_location(ctx)}",
        "--model-control-mode=explicit",
        f"--http-port={TRITON_PORTS['http']}",
        f"--grpc-port={TRITON_PORTS['grpc']}",
        f"--metrics-port={TRITON_PORTS['metrics']}",
        # Load/unload and the other control APIs need the key only the trainer has; the
        # kubelet expands $(VAR) from the env, so the key never appears in the pod spec.
        *server_flags(f"$({TRITON_ADMIN_ENV})"),
    ]
    container: dict[str, Any] = {
        "name": "triton",
        "image": triton.image,
        "imagePullPolicy": ctx.spec.image_pull_policy,
        "args": args,
        "env": [
            _triton_admin_key_env(ctx),
            # Caches (CUDA's ~/.nv, torch's ~/.cache) land on the writable /tmp, not the
            # read-only root.
            {"name": "HOME", "value": TMP_MOUNT},
        ],
        "ports": [
            {"name": port_name, "containerPort": port, "protocol": "TCP"}
            for port_name, port in TRITON_PORTS.items()
        ],
        "readinessProbe": {
            "httpGet": {"path": "/v2/health/ready", "port": "http"},
            "periodSeconds": 5,
        },
        "livenessProbe": {
            "httpGet": {"path": "/v2/health/live", "port": "http"},
            "periodSeconds": 10,
            "failureThreshold": 6,
        },
        "securityContext": _container_security(),
        # The Python backend's stubs exchange tensors through /dev/shm; the runtime's
        # default (64 MiB) is too small for batches.
        "volumeMounts": [{"name": "dshm", "mountPath": "/dev/shm"}],
    }
    resources = _resources(triton.resources, gpus)
    if resources:
        container["resources"] = resources
    volumes: list[dict[str, Any]] = [
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "1Gi"}}
    ]
    _mount_models(ctx, container, volumes, read_only=True)
    template = _pod_template(
        ctx, "triton", container, None, uid=TRITON_UID, writes_volumes=False, volumes=volumes
    )
    template["spec"].update(_gpu_scheduling(triton.node_selector, triton.tolerations, gpus))
    deployment = _deployment(ctx, "triton", template, triton.replicas)
    return [deployment, _service(ctx, "triton", TRITON_PORTS)]


def _ranking_replicas(ctx: _Cr) -> int | None:
    autoscaling = ctx.spec.autoscaling
    if autoscaling.external_engine is not None:
        return None  # the HPA owns .spec.replicas
    if autoscaling.enabled and ctx.desired.ranking_replicas is not None:
        return ctx.desired.ranking_replicas
    replicas = ctx.spec.ranking.replicas
    if autoscaling.enabled:
        replicas = min(max(replicas, autoscaling.min_replicas), autoscaling.max_replicas)
    return replicas


def _ranking(ctx: _Cr, config_hash: str) -> list[Manifest]:
    ranking = ctx.spec.ranking
    # No history length: ranking reads it from each version's export manifest.
    env = settings_env(
        RankingSettings,
        host="0.0.0.0",
        port=PORTS["ranking"],
        feature_url=f"http://{ctx.child('feature')}:{PORTS['feature']}",
        triton_url=f"{ctx.child('triton')}:{TRITON_PORTS['http']}",
        triton_protocol="http",
        triton_deadline_ms=ranking.timeout_ms,
        model_repository=_model_repository_location(ctx),
    )
    # The ranking API reads features over HTTP and never Kafka: no Kafka credentials.
    container = _service_container(ctx, "ranking", env, _resources(ranking.resources), kafka=False)
    volumes: list[dict[str, Any]] = []
    # The ranking API reads each version's export.json and ID tables (string IDs -> rows).
    _mount_models(ctx, container, volumes, read_only=True)
    template = _pod_template(
        ctx,
        "ranking",
        container,
        config_hash,
        uid=SERVICE_UID,
        writes_volumes=False,
        volumes=volumes,
    )
    template["metadata"].setdefault("annotations", {}).update(
        {"prometheus.io/scrape": "true", "prometheus.io/port": str(PORTS["ranking"])}
    )
    deployment = _deployment(ctx, "ranking", template, _ranking_replicas(ctx))
    return [deployment, _service(ctx, "ranking", {"http": PORTS["ranking"]})]


def _tcp(*ports: int) -> list[dict[str, Any]]:
    return [{"protocol": "TCP", "port": port} for port in ports]


def _operator_peer(ctx: _Cr) -> dict[str, Any]:
    """The operator's pods (the chart's labels), which scrape the trainer's metrics."""
    namespaces: dict[str, Any] = {}
    if ctx.desired.operator_namespace:
        namespaces = {
            "matchLabels": {"kubernetes.io/metadata.name": ctx.desired.operator_namespace}
        }
    return {
        "namespaceSelector": namespaces,
        "podSelector": {
            "matchLabels": {
                "app.kubernetes.io/name": "freshrank",
                "app.kubernetes.io/component": "operator",
            }
        },
    }


def _network_policy(ctx: _Cr) -> Manifest:
    """Ingress to the CR's pods: the ranking API from anywhere, everything else from peers.

    One policy selects every pod of the CR; each rule names the port it opens, and ports are
    unique per component (ranking 8080, feature 8081, trainer 8082, Triton 8000-8002), so:
    feature only from ranking; Triton's HTTP/gRPC only from ranking (inference) and the
    trainer (loads); the trainer's metrics only from the operator. Egress is left open
    (Kafka, PostgreSQL, OTLP, object stores live outside). Policies add up: a Prometheus
    scraping the other ports is let in by a policy of its own (see the chart README).
    """

    def pods(component: str) -> dict[str, Any]:
        return {"podSelector": {"matchLabels": selector_labels(ctx.name, component)}}

    triton_api = (TRITON_PORTS["http"], TRITON_PORTS["grpc"])
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _metadata(ctx, ctx.child("network"), "network"),
        "spec": {
            "podSelector": {"matchLabels": {"app.kubernetes.io/instance": ctx.name}},
            "policyTypes": ["Ingress"],
            "ingress": [
                {"ports": _tcp(PORTS["ranking"])},
                {"from": [pods("ranking")], "ports": _tcp(PORTS["feature"], *triton_api)},
                {"from": [pods("trainer")], "ports": _tcp(*triton_api)},
                {"from": [_operator_peer(ctx)], "ports": _tcp(PORTS["trainer"])},
            ],
        },
    }


def latency_query(name: str, namespace: str, window_seconds: int) -> str:
    """PromQL for the ranking p95 (seconds): the one query every engine scales on."""
    selector = f'namespace="{namespace}",pod=~"{name}-ranking-.*",route="{routes.RANK}"'
    return (
        f"histogram_quantile(0.95, sum by (le) "
        f"(rate({REQUEST_LATENCY}_bucket{{{selector}}}[{window_seconds}s])))"
    )


def _autoscaler_objects(ctx: _Cr) -> list[Manifest]:
    autoscaling = ctx.spec.autoscaling
    engine = autoscaling.external_engine
    if engine is None:
        return []
    target_seconds = autoscaling.target_p95_ms / 1000.0
    if engine == "hpa":
        return [_hpa(ctx, autoscaling, target_seconds)]
    return [_scaled_object(ctx, autoscaling, target_seconds)]


def _hpa(ctx: _Cr, autoscaling: Autoscaling, target_seconds: float) -> Manifest:
    # The per-pod p95 comes from the custom metrics API (prometheus-adapter serving
    # latency_query() as freshrank_ranking_p95_seconds; see docs/operator.md).
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": _metadata(ctx, ctx.child("ranking"), "ranking"),
        "spec": {
            "scaleTargetRef": {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": ctx.child("ranking"),
            },
            "minReplicas": autoscaling.min_replicas,
            "maxReplicas": autoscaling.max_replicas,
            "metrics": [
                {
                    "type": "Pods",
                    "pods": {
                        "metric": {"name": "freshrank_ranking_p95_seconds"},
                        "target": {"type": "AverageValue", "averageValue": f"{target_seconds:g}"},
                    },
                }
            ],
            "behavior": _hpa_behavior(autoscaling),
        },
    }


def _hpa_behavior(autoscaling: Autoscaling) -> dict[str, Any]:
    period = autoscaling.period_seconds
    up_percent = round((autoscaling.max_scale_up_factor - 1.0) * 100)
    return {
        "scaleUp": {
            "stabilizationWindowSeconds": autoscaling.scale_up_stabilization_seconds,
            "selectPolicy": "Max",
            "policies": [
                {"type": "Percent", "value": max(up_percent, 1), "periodSeconds": period},
                {"type": "Pods", "value": 1, "periodSeconds": period},
            ],
        },
        "scaleDown": {
            "stabilizationWindowSeconds": autoscaling.scale_down_stabilization_seconds,
            "selectPolicy": "Min",
            "policies": [
                {
                    "type": "Pods",
                    "value": autoscaling.max_scale_down_step,
                    "periodSeconds": period,
                }
            ],
        },
    }


def _scaled_object(ctx: _Cr, autoscaling: Autoscaling, target_seconds: float) -> Manifest:
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": _metadata(ctx, ctx.child("ranking"), "ranking"),
        "spec": {
            "scaleTargetRef": {"name": ctx.child("ranking")},
            "pollingInterval": autoscaling.period_seconds,
            "minReplicaCount": autoscaling.min_replicas,
            "maxReplicaCount": autoscaling.max_replicas,
            "advanced": {"horizontalPodAutoscalerConfig": {"behavior": _hpa_behavior(autoscaling)}},
            "triggers": [
                {
                    "type": "prometheus",
                    # Value, not AverageValue: a latency quantile does not add up across pods.
                    "metricType": "Value",
                    "metadata": {
                        "serverAddress": autoscaling.prometheus_url,
                        "query": latency_query(ctx.name, ctx.namespace, autoscaling.window_seconds),
                        "threshold": f"{target_seconds:g}",
                    },
                }
            ],
        },
    }
