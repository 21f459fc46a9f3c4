"""Pure renderers: valid upstream manifests, owned by the CR, changing only where the spec did."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

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
    assert triton["volumes"] == [
        {"name": "models", "persistentVolumeClaim": {"claimName": "gpu-model-repository"}}
    ]
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
    assert "volumes" not in triton


def test_every_env_var_is_a_setting_of_the_role_that_reads_it() -> None:
    """The contract with the services: FRESHRANK_<FIELD> must name a field of their settings."""
    import dataclasses
    import importlib

    from freshrank.core.settings import env_name

    settings_classes = {
        "feature": "freshrank.feature.settings:FeatureSettings",
        "trainer": "freshrank.trainer.settings:TrainerSettings",
        "ranking": "freshrank.ranking.settings:RankingSettings",
    }
    children = _by_key(render.render(_cr(REPO / "docs/examples/recdep-gpu-full.yaml")))
    config = children[("ConfigMap", "shop-gpu-config")]["data"]
    for role, target in settings_classes.items():
        module_name, class_name = target.split(":")
        cls = getattr(importlib.import_module(module_name), class_name)
        known = {env_name(f.name) for f in dataclasses.fields(cls)}
        kind = "StatefulSet" if role == "trainer" else "Deployment"
        container = children[(kind, f"shop-gpu-{role}")]["spec"]["template"]["spec"]
        env = {e["name"] for e in container["containers"][0]["env"]}
        env |= {k for k in config if k.startswith("FRESHRANK_")}
        assert env <= known, f"{role}: unknown settings {sorted(env - known)}"
