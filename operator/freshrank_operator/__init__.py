"""The freshrank operator: RecommenderDeployment -> feature, trainer, Triton, ranking on Kubernetes.

Layers: ``crd`` (the schema, loaded from crds/; ``crd_validation`` checks whole objects
against it for tests and the bench, never imported here), ``spec`` (the typed spec the rest reads,
checked against the schema by a test), ``render`` (pure manifests), ``autoscaler``
(pure control law), ``observe``/``status`` (pure readings), ``kube``/``reconcile`` (async
API work), ``handlers``/``runtime`` (Kopf). Only the last two import Kopf.
"""

from __future__ import annotations

from freshrank_operator.autoscaler import Autoscaler, Decision, Policy
from freshrank_operator.config import OperatorConfig
from freshrank_operator.crd import (
    API_VERSION,
    GROUP,
    KIND,
    PLURAL,
    VERSION,
    crd_path,
    load_crd,
)
from freshrank_operator.render import Desired
from freshrank_operator.render import render as render_manifests
from freshrank_operator.spec import InvalidSpec, RecommenderSpec, parse_spec

__all__ = [
    "API_VERSION",
    "GROUP",
    "KIND",
    "PLURAL",
    "VERSION",
    "Autoscaler",
    "Decision",
    "Desired",
    "InvalidSpec",
    "OperatorConfig",
    "Policy",
    "RecommenderSpec",
    "crd_path",
    "load_crd",
    "parse_spec",
    "render_manifests",
]
