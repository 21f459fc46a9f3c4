"""The RecommenderDeployment CRD: where it lives and its schema.

``crds/recommenderdeployments.freshrank.io.yaml`` is the one source of the CR schema; this module
loads it (never re-types it). The operator parses specs with the typed model of ``spec`` (checked
against this schema by a test); validating a whole object the way the API server does is
``crd_validation``'s, which tests and the bench use and the operator never imports.
"""

from __future__ import annotations

import copy
import functools
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "API_VERSION",
    "GROUP",
    "KIND",
    "PLURAL",
    "VERSION",
    "SchemaError",
    "crd_path",
    "dotted_path",
    "load_crd",
    "object_schema",
    "shared_object_schema",
    "spec_schema",
]

GROUP = "freshrank.io"
VERSION = "v1alpha1"
PLURAL = "recommenderdeployments"
KIND = "RecommenderDeployment"
API_VERSION = f"{GROUP}/{VERSION}"
CRD_FILE = f"{PLURAL}.{GROUP}.yaml"
CRD_PATH_ENV = "FRESHRANK_CRD_PATH"


@dataclass(frozen=True)
class SchemaError:
    """One violation: ``field`` is the dotted path under the object (``spec.kafka.partitions``)."""

    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


def dotted_path(path: Iterable[int | str]) -> str:
    """``("spec", "kafka", "topics", 0)`` -> ``spec.kafka.topics[0]`` (``<root>`` when empty)."""
    parts: list[str] = []
    for part in path:
        parts.append(f"[{part}]" if isinstance(part, int) else ("." if parts else "") + str(part))
    return "".join(parts) or "<root>"


def crd_path() -> Path:
    """The CRD file: ``$FRESHRANK_CRD_PATH`` (the image sets it), else the source checkout's."""
    override = os.environ.get(CRD_PATH_ENV)
    if override:
        return Path(override)
    # operator/freshrank_operator/crd.py -> <repo>/crds/<file>
    return Path(__file__).resolve().parents[2] / "crds" / CRD_FILE


@functools.cache
def _load(path: str) -> dict[str, Any]:
    with open(path, encoding="utf-8") as handle:
        document = yaml.safe_load(handle)
    if not isinstance(document, dict) or document.get("kind") != "CustomResourceDefinition":
        raise ValueError(f"{path} is not a CustomResourceDefinition")
    return document


def load_crd() -> dict[str, Any]:
    """A fresh copy of the CRD document (callers may mutate it)."""
    return copy.deepcopy(_load(str(crd_path())))


def _version(crd: Mapping[str, Any]) -> Mapping[str, Any]:
    for version in crd["spec"]["versions"]:
        if version["name"] == VERSION:
            return dict(version)
    raise ValueError(f"the CRD has no version {VERSION}")


def object_schema() -> dict[str, Any]:
    """The openAPIV3Schema of the whole object (a copy: callers may mutate it)."""
    return copy.deepcopy(dict(shared_object_schema()))


def shared_object_schema() -> Mapping[str, Any]:
    """The openAPIV3Schema itself, shared and read-only by convention.

    For the hot paths (validating and defaulting on every reconcile and tick): a deep copy of
    the CRD per call was a fifth of the operator's CPU with 100 CRs.
    """
    schema: Mapping[str, Any] = _version(_load(str(crd_path())))["schema"]["openAPIV3Schema"]
    return schema


def spec_schema() -> dict[str, Any]:
    return dict(object_schema()["properties"]["spec"])
