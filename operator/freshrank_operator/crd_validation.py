"""A whole RecommenderDeployment checked the way the API server checks it, for tests and the bench.

Validation mirrors what the API server does with the CRD's schema, so tests and the operator
bench can rely on it where the API server is absent (the kmock emulator does no validation):
OpenAPI types, ranges, enums and patterns through ``jsonschema``, and the CEL rules
(``x-kubernetes-validations``) through ``celpy`` when it is installed. The operator itself
parses specs with the typed model of ``spec`` and never imports this module, so ``jsonschema``
is a dependency of the ``local`` and ``dev`` extras, not of the runtime.

``API_VERSION`` and ``KIND`` are re-exported so that a caller building and validating a CR
needs this one import.
"""

from __future__ import annotations

import copy
import functools
import importlib
from collections.abc import Iterator, Mapping
from typing import Any

from jsonschema import Draft4Validator

from freshrank_operator.crd import API_VERSION, KIND, SchemaError, dotted_path, shared_object_schema

__all__ = ["API_VERSION", "KIND", "SchemaError", "apply_defaults", "schema_errors", "validate"]


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


def _openapi_errors(obj: Mapping[str, Any], schema: Mapping[str, Any]) -> list[SchemaError]:
    # OpenAPI v3.0 keeps draft-4 semantics (boolean exclusiveMinimum); x-kubernetes-* keys are
    # unknown keywords to jsonschema and so ignored, which is what we want here.
    validator = Draft4Validator(dict(schema))
    errors = sorted(validator.iter_errors(dict(obj)), key=lambda e: list(e.absolute_path))
    out = []
    for error in errors:
        field = dotted_path(error.absolute_path)
        if error.validator == "required" and isinstance(error.instance, dict):
            missing = [r for r in error.validator_value if r not in error.instance]
            if missing:
                field = dotted_path([*error.absolute_path, missing[0]])
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
            field = dotted_path([p for p in field_path if p != ""])
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
