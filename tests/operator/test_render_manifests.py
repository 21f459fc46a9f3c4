"""Pure renderers: valid upstream manifests, owned by the CR, changing only where the spec did."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from freshrank.core.service_settings import FeatureSettings, RankingSettings, TrainerSettings
from freshrank.core.settings import Settings, env_name, load_settings
from freshrank_operator import render
from freshrank_operator.crd import API_VERSION, KIND

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((REPO / "docs" / "examples").glob("*.yaml"))
K8S_VERSION = "1.30"  # the oldest minor we test against (DESIGN: any cluster >= 1.28)
UPSTREAM_KINDS = {
    "ConfigMap",
    "Service",
    "PersistentVolumeClaim",
    "Deployment",
    "StatefulSet",
    "HorizontalPodAutoscaler",
    "NetworkPolicy",
}


def _cr(path: Path) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(path.read_text())
    # The examples name no namespace (`kubectl -n X apply -f`); the API server sets it.
    document["metadata"]["namespace"] = "recsys"
    document["metadata"]["uid"] = "0b7c7d4e-1111-4a4a-8e8e-123456789abc"
    return document


def _by_key(manifests: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(m["kind"], m["metadata"]["name"]): m for m in manifests}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_rendered_object_validates_against_upstream_schemas(path: Path) -> None:
    for manifest in render.render(_cr(path)):
        if manifest["kind"] in UPSTREAM_KINDS:
            kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)
        else:
            assert manifest["kind"] == "ScaledObject"  # KEDA's CRD: checked by shape below


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_child_is_owned_by_the_cr_and_labelled(path: Path) -> None:
    cr = _cr(path)
    for manifest in render.render(cr):
        meta = manifest["metadata"]
        assert meta["namespace"] == cr["metadata"]["namespace"]
        assert meta["ownerReferences"] == [
            {
                "apiVersion": API_VERSION,
                "kind": KIND,
                "name": cr["metadata"]["name"],
                "uid": cr["metadata"]["uid"],
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
        assert meta["labels"]["app.kubernetes.io/instance"] == cr["metadata"]["name"]
        assert meta["labels"]["app.kubernetes.io/managed-by"] == render.MANAGED_BY
        assert meta["annotations"][render.SPEC_HASH_ANNOTATION] == render.manifest_hash(manifest)


def test_minimal_renders_the_whole_stack() -> None:
    kinds = set(_by_key(render.render(_cr(REPO / "docs/examples/recdep-minimal.yaml"))))
    assert kinds == {
        ("ConfigMap", "shop-config"),
        ("PersistentVolumeClaim", "shop-feature-data"),
        ("Deployment", "shop-feature"),
        ("Service", "shop-feature"),
        ("PersistentVolumeClaim", "shop-models"),
        ("StatefulSet", "shop-trainer"),
        ("Service", "shop-trainer"),
        ("Deployment", "shop-triton"),
        ("Service", "shop-triton"),
        ("Deployment", "shop-ranking"),
        ("Service", "shop-ranking"),
        ("NetworkPolicy", "shop-network"),
    }


def test_gpu_example_puts_triton_and_trainer_on_gpu_nodes() -> None:
    children = _by_key(render.render(_cr(REPO / "docs/examples/recdep-gpu-full.yaml")))
    triton = children[("Deployment", "shop-gpu-triton")]["spec"]["template"]["spec"]
    container = triton["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert "--model-control-mode=explicit" in container["args"]
    assert container["image"].startswith("nvcr.io/nvidia/tritonserver:")
    assert triton["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    assert triton["tolerations"][0]["key"] == "nvidia.com/gpu"
    models = {"name": "models", "persistentVolumeClaim": {"claimName": "gpu-model-repository"}}
    assert models in triton["volumes"]
    trainer = children[("StatefulSet", "shop-gpu-trainer")]["spec"]
    assert (
        trainer["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
    )
    assert trainer["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] == "50Gi"
    # An existing claim is used, not created; secrets are referenced, never copied.
    assert ("PersistentVolumeClaim", "shop-gpu-models") not in children
    feature = children[("Deployment", "shop-gpu-feature")]["spec"]["template"]["spec"]
    dsn = [e for e in feature["containers"][0]["env"] if e["name"] == "FRESHRANK_DATABASE_URL"]
    assert dsn[0]["valueFrom"]["secretKeyRef"] == {"name": "shop-feature-store", "key": "dsn"}
    # Kafka SASL credentials: each key of the Secret as the setting the services read.
    kafka = {
        e["name"]: e["valueFrom"]["secretKeyRef"]
        for e in feature["containers"][0]["env"]
        if e["name"].startswith("FRESHRANK_KAFKA_")
    }
    secret = "shop-kafka-credentials"
    assert kafka == {
        "FRESHRANK_KAFKA_USERNAME": {"name": secret, "key": "username"},
        "FRESHRANK_KAFKA_PASSWORD": {"name": secret, "key": "password"},
        "FRESHRANK_KAFKA_MECHANISM": {"name": secret, "key": "mechanism", "optional": True},
        "FRESHRANK_KAFKA_SECURITY_PROTOCOL": {
            "name": secret,
            "key": "securityProtocol",
            "optional": True,
        },
    }


def test_services_use_one_image_with_their_role_and_ports() -> None:
    children = _by_key(render.render(_cr(REPO / "docs/examples/recdep-minimal.yaml")))
    for role, port in render.PORTS.items():
        kind = "StatefulSet" if role == "trainer" else "Deployment"
        pod = children[(kind, f"shop-{role}")]["spec"]["template"]["spec"]
        container = pod["containers"][0]
        assert container["image"] == render.DEFAULT_IMAGE
        assert container["args"] == [role]
        assert container["ports"][0]["containerPort"] == port
        assert children[("Service", f"shop-{role}")]["spec"]["ports"][0]["port"] == port
    triton_ports = children[("Service", "shop-triton")]["spec"]["ports"]
    assert [p["port"] for p in triton_ports] == [8000, 8001, 8002]
    config = children[("ConfigMap", "shop-config")]["data"]
    assert config["FRESHRANK_NAME"] == "shop"
    assert config["FRESHRANK_BOOTSTRAP_SERVERS"] == "kafka.kafka.svc:9092"


def test_rendering_is_deterministic() -> None:
    cr = _cr(REPO / "docs/examples/recdep-gpu-full.yaml")
    assert render.render(cr) == render.render(copy.deepcopy(cr))


def _changed(before: dict[str, Any], after: dict[str, Any]) -> set[tuple[str, str]]:
    old, new = _by_key(render.render(before)), _by_key(render.render(after))
    assert old.keys() == new.keys()
    return {key for key in old if old[key] != new[key]}


def test_a_trainer_change_changes_only_the_trainer() -> None:
    before = _cr(REPO / "docs/examples/recdep-minimal.yaml")
    after = copy.deepcopy(before)
    after["spec"]["trainer"] = {"batchSize": 512}
    assert _changed(before, after) == {("StatefulSet", "shop-trainer")}


def test_a_triton_change_changes_only_triton() -> None:
    before = _cr(REPO / "docs/examples/recdep-minimal.yaml")
    after = copy.deepcopy(before)
    after["spec"]["triton"] = {"image": "nvcr.io/nvidia/tritonserver:24.12-py3"}
    assert _changed(before, after) == {("Deployment", "shop-triton")}


def test_a_shared_config_change_rolls_the_pods_that_read_it() -> None:
    before = _cr(REPO / "docs/examples/recdep-minimal.yaml")
    after = copy.deepcopy(before)
    after["spec"]["telemetry"] = {"otlpEndpoint": "http://collector:4318"}
    assert _changed(before, after) == {
        ("ConfigMap", "shop-config"),
        ("Deployment", "shop-feature"),
        ("StatefulSet", "shop-trainer"),
        ("Deployment", "shop-ranking"),
    }


def test_hpa_engine_renders_an_hpa_and_leaves_replicas_to_it() -> None:
    children = _by_key(render.render(_cr(REPO / "docs/examples/recdep-hpa.yaml")))
    hpa = children[("HorizontalPodAutoscaler", "shop-hpa-ranking")]["spec"]
    assert hpa["scaleTargetRef"]["name"] == "shop-hpa-ranking"
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (2, 20)
    assert hpa["metrics"][0]["pods"]["target"]["averageValue"] == "0.04"
    assert hpa["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 300
    assert "replicas" not in children[("Deployment", "shop-hpa-ranking")]["spec"]
    # No GPU asked: no GPU limits and no GPU toleration.
    triton = children[("Deployment", "shop-hpa-triton")]["spec"]["template"]["spec"]
    assert "tolerations" not in triton
    assert "nvidia.com/gpu" not in str(triton["containers"][0].get("resources", {}))


def test_keda_engine_renders_a_scaled_object_on_the_latency_query() -> None:
    children = _by_key(render.render(_cr(REPO / "docs/examples/recdep-keda.yaml")))
    scaled = children[("ScaledObject", "shop-keda-ranking")]
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    spec = scaled["spec"]
    assert spec["scaleTargetRef"] == {"name": "shop-keda-ranking"}
    assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (2, 20)
    trigger = spec["triggers"][0]
    assert trigger["type"] == "prometheus"
    assert trigger["metricType"] == "Value"
    assert trigger["metadata"]["threshold"] == "0.04"
    assert trigger["metadata"]["query"] == render.latency_query("shop-keda", "recsys", 60)
    assert 'route="/v1/rank"' in trigger["metadata"]["query"]
    assert "replicas" not in children[("Deployment", "shop-keda-ranking")]["spec"]


def test_operator_engine_replicas_follow_the_decision_within_bounds() -> None:
    cr = _cr(REPO / "docs/examples/recdep-minimal.yaml")

    def replicas(desired: render.Desired) -> int:
        ranking = _by_key(render.render(cr, desired))[("Deployment", "shop-ranking")]
        return int(ranking["spec"]["replicas"])

    assert replicas(render.Desired()) == 2  # spec.ranking.replicas
    assert replicas(render.Desired(ranking_replicas=7)) == 7
    cr["spec"]["autoscaling"] = {"enabled": False}
    assert replicas(render.Desired(ranking_replicas=7)) == 2


def test_model_repository_url_needs_no_volume() -> None:
    cr = _cr(REPO / "docs/examples/recdep-minimal.yaml")
    cr["spec"]["triton"] = {"modelRepository": {"url": "s3://bucket/models"}}
    children = _by_key(render.render(cr))
    assert ("PersistentVolumeClaim", "shop-models") not in children
    triton = children[("Deployment", "shop-triton")]["spec"]["template"]["spec"]
    assert "--model-repository=s3://bucket/models" in triton["containers"][0]["args"]
    assert not [v for v in triton["volumes"] if "persistentVolumeClaim" in v]


# The settings class each container of the renderer is read by (one source of the env names).
_ROLE_SETTINGS: dict[str, type[Settings]] = {
    "feature": FeatureSettings,
    "trainer": TrainerSettings,
    "ranking": RankingSettings,
}


@pytest.mark.parametrize(
    "example", ["recdep-minimal.yaml", "recdep-gpu-full.yaml", "recdep-hpa.yaml"]
)
def test_every_env_var_is_a_setting_of_the_role_that_reads_it(example: str) -> None:
    """The contract with the services: each FRESHRANK_* var a pod gets is a field of its role's
    settings class (and parses as one), so renaming a setting cannot leave a pod's var unread."""
    cr = _cr(REPO / "docs/examples" / example)
    children = _by_key(render.render(cr))
    name = cr["metadata"]["name"]
    config = children[("ConfigMap", f"{name}-config")]["data"]
    shared = {k: v for k, v in config.items() if k.startswith("FRESHRANK_")}
    assert set(config) - set(shared) == {"OTEL_EXPORTER_OTLP_ENDPOINT"}
    for role, cls in _ROLE_SETTINGS.items():
        known = {env_name(cls, field): field for field in cls.model_fields}
        kind = "StatefulSet" if role == "trainer" else "Deployment"
        container = children[(kind, f"{name}-{role}")]["spec"]["template"]["spec"]["containers"][0]
        env = {e["name"]: e.get("value", "from a Secret") for e in container["env"]}
        unknown = (set(env) | set(shared)) - set(known)
        assert not unknown, f"{role}: env vars no setting of {cls.__name__} reads: {unknown}"
        values = {k: v for k, v in {**shared, **env}.items() if v != "from a Secret"}
        load_settings(cls, environ=values)  # every rendered value parses for its role


def test_the_feature_history_uses_the_name_the_trainer_uses() -> None:
    children = _by_key(render.render(_cr(REPO / "docs/examples/recdep-gpu-full.yaml")))
    for kind, child, has_it in [
        ("Deployment", "shop-gpu-feature", True),
        ("StatefulSet", "shop-gpu-trainer", True),
        # Ranking reads the history length from each version's export manifest.
        ("Deployment", "shop-gpu-ranking", False),
    ]:
        env = children[(kind, child)]["spec"]["template"]["spec"]["containers"][0]["env"]
        assert ("FRESHRANK_HISTORY_LEN" in {e["name"] for e in env}) is has_it, child


def _pod_templates(manifests: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """component -> pod template of every workload rendered."""
    return {
        m["metadata"]["labels"]["app.kubernetes.io/component"]: m["spec"]["template"]
        for m in manifests
        if m["kind"] in {"Deployment", "StatefulSet"}
    }


# Pod Security Standards, "restricted" (Kubernetes 1.28), as the admission plugin checks them.
_RESTRICTED_VOLUME_SOURCES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}


def _restricted_violations(pod: dict[str, Any]) -> list[str]:
    problems = []
    pod_security = pod.get("securityContext") or {}
    for host in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(host):
            problems.append(host)
    for volume in pod.get("volumes") or []:
        sources = set(volume) - {"name"}
        if not sources <= _RESTRICTED_VOLUME_SOURCES:
            problems.append(f"volume {volume['name']}: {sources}")
    containers = [*(pod.get("initContainers") or []), *pod["containers"]]
    for container in containers:
        security = container.get("securityContext") or {}
        name = container["name"]
        if security.get("privileged"):
            problems.append(f"{name}: privileged")
        if security.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{name}: allowPrivilegeEscalation != false")
        non_root = security.get("runAsNonRoot", pod_security.get("runAsNonRoot"))
        if non_root is not True:
            problems.append(f"{name}: runAsNonRoot != true")
        if security.get("runAsUser", pod_security.get("runAsUser")) == 0:
            problems.append(f"{name}: runAsUser 0")
        seccomp = security.get("seccompProfile", pod_security.get("seccompProfile")) or {}
        if seccomp.get("type") not in {"RuntimeDefault", "Localhost"}:
            problems.append(f"{name}: seccompProfile {seccomp}")
        capabilities = security.get("capabilities") or {}
        if "ALL" not in (capabilities.get("drop") or []):
            problems.append(f"{name}: capabilities.drop lacks ALL")
        if not set(capabilities.get("add") or []) <= {"NET_BIND_SERVICE"}:
            problems.append(f"{name}: capabilities.add {capabilities['add']}")
        if any(port.get("hostPort") for port in container.get("ports") or []):
            problems.append(f"{name}: hostPort")
    return problems


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_pod_passes_pod_security_restricted(path: Path) -> None:
    """Unit check of the profile; the API server's own admission is in tests/envtest."""
    templates = _pod_templates(render.render(_cr(path)))
    assert set(templates) == {"feature", "trainer", "triton", "ranking"}
    for component, template in templates.items():
        pod = template["spec"]
        assert _restricted_violations(pod) == [], component
        # Beyond the profile, where it fits: no API token, a read-only root with /tmp.
        assert pod["automountServiceAccountToken"] is False
        assert pod["securityContext"]["runAsUser"] != 0
        for container in pod["containers"]:
            assert container["securityContext"]["readOnlyRootFilesystem"] is True
            tmp = [m for m in container["volumeMounts"] if m["mountPath"] == "/tmp"]
            volume = next(v for v in pod["volumes"] if v["name"] == tmp[0]["name"])
            assert "emptyDir" in volume


def test_pods_run_as_the_users_their_images_have() -> None:
    templates = _pod_templates(render.render(_cr(REPO / "docs/examples/recdep-minimal.yaml")))
    user = {c: t["spec"]["securityContext"]["runAsUser"] for c, t in templates.items()}
    dockerfile = (REPO / "Dockerfile").read_text()
    assert f"USER {render.SERVICE_UID}" in dockerfile
    assert user == {
        "feature": render.SERVICE_UID,
        "trainer": render.SERVICE_UID,
        "ranking": render.SERVICE_UID,
        "triton": 1000,  # NVIDIA's image: user triton-server
    }
    # Writers own their volumes through the group; readers do not re-own shared ones.
    fs_group = {c: t["spec"]["securityContext"].get("fsGroup") for c, t in templates.items()}
    assert fs_group == {
        "feature": render.SERVICE_UID,
        "trainer": render.SERVICE_UID,
        "ranking": None,
        "triton": None,
    }


def _env(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in template["spec"]["containers"][0].get("env") or []}


def test_ranking_gets_no_kafka_credentials() -> None:
    templates = _pod_templates(render.render(_cr(REPO / "docs/examples/recdep-gpu-full.yaml")))
    for component in ("feature", "trainer"):
        assert "FRESHRANK_KAFKA_PASSWORD" in _env(templates[component])
    secrets = {
        component: {
            e["valueFrom"]["secretKeyRef"]["name"]
            for e in _env(template).values()
            if "secretKeyRef" in e.get("valueFrom", {})
        }
        for component, template in templates.items()
    }
    assert secrets["ranking"] == set()  # it reads features over HTTP, never Kafka
    assert secrets["triton"] == {render.triton_admin_secret_name("shop-gpu")}


def test_triton_model_control_needs_the_key_only_the_trainer_gets() -> None:
    from freshrank.core.triton_auth import ADMIN_KEY_HEADER

    templates = _pod_templates(render.render(_cr(REPO / "docs/examples/recdep-minimal.yaml")))
    key_ref = {
        "secretKeyRef": {
            "name": render.triton_admin_secret_name("shop"),
            "key": render.TRITON_ADMIN_SECRET_KEY,
        }
    }
    triton = templates["triton"]["spec"]["containers"][0]
    apis = "model-repository,model-config,shared-memory,statistics,trace,logging"
    restriction = f"{apis}:{ADMIN_KEY_HEADER}=$({render.TRITON_ADMIN_ENV})"
    assert f"--http-restricted-api={restriction}" in triton["args"]
    assert f"--grpc-restricted-protocol={restriction}" in triton["args"]
    assert _env(templates["triton"])[render.TRITON_ADMIN_ENV]["valueFrom"] == key_ref
    assert _env(templates["trainer"])[render.TRITON_ADMIN_ENV]["valueFrom"] == key_ref
    assert render.TRITON_ADMIN_ENV not in _env(templates["ranking"])
    assert render.TRITON_ADMIN_ENV not in _env(templates["feature"])


def test_network_policy_opens_only_the_ranking_api_to_the_outside() -> None:
    children = _by_key(
        render.render(
            _cr(REPO / "docs/examples/recdep-minimal.yaml"),
            render.Desired(operator_namespace="freshrank-system"),
        )
    )
    policy = children[("NetworkPolicy", "shop-network")]["spec"]
    assert policy["podSelector"] == {"matchLabels": {"app.kubernetes.io/instance": "shop"}}
    assert policy["policyTypes"] == ["Ingress"]

    def allowed(port: int) -> list[Any]:
        """The sources each rule admits on ``port`` (None: anywhere)."""
        return [
            rule.get("from")
            for rule in policy["ingress"]
            if any(p["port"] == port for p in rule["ports"])
        ]

    def components(sources: list[Any]) -> set[str]:
        return {
            peer["podSelector"]["matchLabels"]["app.kubernetes.io/component"]
            for source in sources
            for peer in source
        }

    assert allowed(8080) == [None]  # ranking: anyone
    assert components(allowed(8081)) == {"ranking"}  # feature
    assert components(allowed(8000)) == components(allowed(8001)) == {"ranking", "trainer"}
    assert allowed(8002) == []  # Triton metrics: nobody unless a policy of your own adds it
    (operator,) = allowed(8082)[0]  # trainer metrics: the operator scrapes them
    assert operator["namespaceSelector"] == {
        "matchLabels": {"kubernetes.io/metadata.name": "freshrank-system"}
    }
    assert operator["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "operator"
    # Every port a pod declares is covered by a rule (nothing the CR runs is cut off).
    declared = {
        port["containerPort"]
        for m in children.values()
        if m["kind"] in {"Deployment", "StatefulSet"}
        for c in m["spec"]["template"]["spec"]["containers"]
        for port in c["ports"]
    }
    assert {p for p in declared if allowed(p)} == declared - {8002}


def _trainer_image(cr: dict[str, Any]) -> str:
    trainer = _by_key(render.render(cr))[("StatefulSet", f"{cr['metadata']['name']}-trainer")]
    image: str = trainer["spec"]["template"]["spec"]["containers"][0]["image"]
    return image


def test_a_gpu_trainer_runs_the_cuda_variant_of_the_image() -> None:
    cr = _cr(REPO / "docs/examples/recdep-minimal.yaml")
    cr["spec"]["image"] = "registry.example:5000/freshrank:0.2.0"
    assert _trainer_image(cr) == "registry.example:5000/freshrank:0.2.0"
    cr["spec"]["trainer"] = {"gpus": 1}
    assert _trainer_image(cr) == "registry.example:5000/freshrank:0.2.0-cuda"
    cr["spec"]["trainer"]["image"] = "mine/trainer:gpu"
    assert _trainer_image(cr) == "mine/trainer:gpu"


@pytest.mark.parametrize(
    ("image", "variant"),
    [
        ("ghcr.io/freshrank/freshrank:0.1.0", "ghcr.io/freshrank/freshrank:0.1.0-cuda"),
        ("registry.example:5000/freshrank", "registry.example:5000/freshrank:latest-cuda"),
        ("freshrank@sha256:" + "a" * 64, "freshrank@sha256:" + "a" * 64),
    ],
)
def test_cuda_variant_names_the_cuda_tag(image: str, variant: str) -> None:
    assert render.cuda_variant(image) == variant
