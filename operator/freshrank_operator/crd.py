"""The RecommenderDeployment CRD: where it lives, its schema, defaulting and validation.

``crds/recommenderdeployments.freshrank.io.yaml`` is the one source of the CR schema; this module
loads it (never re-types it). Validation mirrors what the API server does with it, so code and
tests can rely on it where the API server is absent (the kmock emulator does no validation):
OpenAPI types, ranges, enums and patterns through ``jsonschema``, and the CEL rules
(``x-kubernetes-validations``) through ``celpy`` when it is installed.
"""

from __future__ import annotations

import copy
import functools
import importlib
import os
from collections.abc import Iterator, Mapping
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
    "apply_defaults",
    "crd_path",
    "load_crd",
    "schema_errors",
    "shared_object_schema",
    "spec_schema",
    "validate",
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


def apply_defaults(value: Any, schema: Mapping[str, Any]) -> Any:
    """Fill in schema defaults the way the API server does (recursively, defaults defaulted too)."""
    if isinstance(value, dict) and schema.get("type") == "object":
        properties: Mapping[str, Any] = schema.get("properties", {})
        out = dict(value)
        for name, sub in properties.items():
            if name not in out and "default" in sub:
                out[name] = copy.deepcopy(sub["default"])
            if name in out:
                out[name] = apply_defaults(out[name], sub)
        extra = schema.get("additionalProperties")
        if isinstance(extra, Mapping):
            for name in out:
                if name not in properties:
                    out[name] = apply_defaults(out[name], extra)
        return out
    if isinstance(value, list) and isinstance(schema.get("items"), Mapping):
        return [apply_defaults(item, schema["items"]) for item in value]
    return value


def _dotted(path: Iterator[Any] | Any) -> str:
    parts: list[str] = []
    for part in path:
        if isinstance(part, int):
            parts.append(f"[{part}]")
        else:
            parts.append(("." if parts else "") + str(part))
    return "".join(parts) or "<root>"


def _openapi_errors(obj: Mapping[str, Any], schema: Mapping[str, Any]) -> list[SchemaError]:
    # OpenAPI v3.0 keeps draft-4 semantics (boolean exclusiveMinimum); x-kubernetes-* keys are
    # unknown keywords to jsonschema and so ignored, which is what we want here.
    from jsonschema import Draft4Validator

    validator = Draft4Validator(dict(schema))
    errors = sorted(validator.iter_errors(dict(obj)), key=lambda e: list(e.absolute_path))
    out = []
    for error in errors:
        field = _dotted(error.absolute_path)
        if error.validator == "required" and isinstance(error.instance, dict):
            missing = [r for r in error.validator_value if r not in error.instance]
            if missing:
                field = _dotted([*error.absolute_path, missing[0]])
        out.append(SchemaError(field, error.message))
    return out


def _cel_rules(
    value: Any, schema: Mapping[str, Any], path: list[Any]
) -> Iterator[tuple[list[Any], Any, Mapping[str, Any]]]:
    """Every (path, value, rule) whose ``self`` is present in ``value``.

    Transition rules (those reading ``oldSelf``) judge an update against the stored object;
    one object alone cannot break them, so they are the API server's alone.
    """
    for rule in schema.get("x-kubernetes-validations", []):
        if "oldSelf" not in rule["rule"]:
            yield path, value, rule
    if isinstance(value, dict):
        for name, sub in schema.get("properties", {}).items():
            if name in value:
                yield from _cel_rules(value[name], sub, [*path, name])
    elif isinstance(value, list) and isinstance(schema.get("items"), Mapping):
        for index, item in enumerate(value):
            yield from _cel_rules(item, schema["items"], [*path, index])


@functools.cache
def _cel_program(rule: str) -> Any:
    """A compiled CEL rule (compiling is slow: once per rule per process), or None."""
    try:
        # Imported by name: celpy is an optional (test) dependency without type information.
        celpy: Any = importlib.import_module("celpy")
    except ImportError:  # the API server enforces CEL anyway
        return None
    env = celpy.Environment()
    return env.program(env.compile(rule))


def _cel_errors(obj: Mapping[str, Any], schema: Mapping[str, Any]) -> list[SchemaError]:
    try:
        celpy: Any = importlib.import_module("celpy")
        json_to_cel = importlib.import_module("celpy.adapter").json_to_cel
    except ImportError:  # the API server enforces CEL anyway; celpy is a test dependency
        return []
    out = []
    for path, value, rule in _cel_rules(dict(obj), schema, []):
        program = _cel_program(rule["rule"])
        result = program.evaluate({"self": json_to_cel(value)})
        if not (isinstance(result, celpy.celtypes.BoolType) and bool(result)):
            field_path = [*path, *str(rule.get("fieldPath", "")).lstrip(".").split(".")]
            field = _dotted([p for p in field_path if p != ""])
            out.append(
                SchemaError(field, str(rule.get("message") or f"failed rule {rule['rule']}"))
            )
    return out


def schema_errors(obj: Mapping[str, Any], *, defaults: bool = True) -> list[SchemaError]:
    """All the reasons the API server would reject ``obj`` (a whole RecommenderDeployment)."""
    schema = shared_object_schema()
    subject = apply_defaults(dict(obj), schema) if defaults else dict(obj)
    errors = _openapi_errors(subject, schema)
    if errors:  # CEL runs on well-typed objects only, as in the API server
        return errors
    return _cel_errors(subject, schema)


def validate(obj: Mapping[str, Any]) -> dict[str, Any]:
    """The defaulted object, or ``ValueError`` whose message names every offending field."""
    errors = schema_errors(obj)
    if errors:
        raise ValueError("; ".join(str(e) for e in errors))
    defaulted: dict[str, Any] = apply_defaults(dict(obj), shared_object_schema())
    return defaulted
