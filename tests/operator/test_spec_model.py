"""The typed spec (freshrank_operator.spec) agrees with the CRD, the schema the API server uses.

The CRD's openAPIV3Schema is walked beside the models' JSON schema: every property has a field
and every field a property, with the same type, enum, range, length, pattern, default and
requiredness. Defaulting is compared on whole CRs (the CRD's defaulting here; the API server's
own in tests/operator/test_envtest_crd.py), and the CEL rules by the bad CRs both must reject.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, cast

import pytest
import yaml
from bad_crs import EXAMPLES, INVALID, BadCr, minimal, with_value
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import core_schema

from freshrank_operator import crd, crd_validation, spec
from freshrank_operator.controller import CrState

# Status is the operator's output (written from its observations), not parsed from the CR.
NOT_MODELLED = {".status"}
# The keywords both schemas use for a node's own constraints.
KEYWORDS = ("enum", "minimum", "maximum", "minLength", "maxLength", "pattern", "maxItems")
MISSING = object()


class _FactoryDefaults(GenerateJsonSchema):
    """Pydantic leaves a ``default_factory`` out of the JSON schema; the CRD writes such
    group defaults as ``default: {}``. Show what the factory makes, to compare the two."""

    def default_schema(self, schema: core_schema.WithDefaultSchema) -> JsonSchemaValue:
        factory = schema.get("default_factory")
        if factory is not None and not schema.get("default_factory_takes_data"):
            made = cast(Callable[[], Any], factory)()
            schema = core_schema.with_default_schema(schema["schema"], default=made)
        return super().default_schema(schema)


def model_schema() -> dict[str, Any]:
    return spec.RecommenderDeployment.model_json_schema(
        by_alias=True, schema_generator=_FactoryDefaults
    )


def _resolve(node: Mapping[str, Any], defs: Mapping[str, Any]) -> dict[str, Any]:
    """``node`` with its ``$ref`` replaced by the definition (siblings like default kept)."""
    out = dict(node)
    ref = out.pop("$ref", None)
    if ref is not None:
        out = {**defs[ref.rsplit("/", 1)[-1]], **out}
    return out


def _model_node(node: Mapping[str, Any], defs: Mapping[str, Any]) -> tuple[dict[str, Any], bool]:
    """(the node, whether it is optional): ``X | None`` unwrapped, ``int | str`` as the CRD's
    int-or-string (its pattern is the string member's)."""
    node = _resolve(node, defs)
    branches = node.pop("anyOf", None)
    if branches is None:
        return node, False
    members = [_resolve(b, defs) for b in branches if b != {"type": "null"}]
    optional = len(members) < len(branches)
    if len(members) == 1:
        return {**node, **members[0]}, optional
    types = sorted(m["type"] for m in members)
    assert types == ["integer", "string"], f"an unexpected union: {members}"
    string = next(m for m in members if m["type"] == "string")
    return {**node, "type": "int-or-string", **{k: string[k] for k in KEYWORDS if k in string}}, (
        optional
    )


def _crd_view(node: Mapping[str, Any]) -> dict[str, Any]:
    view = {"type": "int-or-string" if node.get("x-kubernetes-int-or-string") else node["type"]}
    view.update({k: node[k] for k in KEYWORDS if k in node})
    if node.get("exclusiveMinimum") is True:  # OpenAPI 3.0's flag; JSON Schema's number
        view["exclusiveMinimum"] = view.pop("minimum")
    return view


def _model_view(node: Mapping[str, Any]) -> dict[str, Any]:
    view = {"type": node["type"]}
    view.update({k: node[k] for k in (*KEYWORDS, "exclusiveMinimum") if k in node})
    return view


def _without_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_none(v) for v in value]
    return value


def _exact(value: Any) -> str:
    """Equal values of equal JSON types (``2`` is not ``2.0``)."""
    return json.dumps(value, sort_keys=True)


def schema_differences(
    crd_node: Mapping[str, Any],
    model_node: Mapping[str, Any],
    defs: Mapping[str, Any],
    path: str = "",
    optional: bool = False,
) -> list[str]:
    """Every way the model's node differs from the CRD's, each naming the property."""
    where = path or "<root>"
    found: list[str] = []
    if _crd_view(crd_node) != _model_view(model_node):
        found.append(f"{where}: CRD {_crd_view(crd_node)} != model {_model_view(model_node)}")
    crd_default = crd_node.get("default", MISSING)
    model_default = model_node.get("default", MISSING)
    if optional and model_default is None:
        model_default = MISSING  # X | None = None: absent unless given, as in the CRD
    if isinstance(crd_default, dict):  # a group default ({}): its nested defaults apply too
        crd_default = crd_validation.apply_defaults(copy.deepcopy(crd_default), crd_node)
        model_default = _without_none(model_default)
    if (crd_default is MISSING) != (model_default is MISSING) or (
        crd_default is not MISSING and _exact(crd_default) != _exact(model_default)
    ):
        shown = ["(none)" if d is MISSING else d for d in (crd_default, model_default)]
        found.append(f"{where}: default CRD {shown[0]!r} != model {shown[1]!r}")
    if set(crd_node.get("required", [])) != set(model_node.get("required", [])):
        found.append(
            f"{where}: required CRD {sorted(crd_node.get('required', []))} "
            f"!= model {sorted(model_node.get('required', []))}"
        )
    crd_properties = crd_node.get("properties") or {}
    model_properties = model_node.get("properties") or {}
    for name in sorted(set(crd_properties) | set(model_properties)):
        child = f"{path}.{name}"
        if child in NOT_MODELLED:
            continue
        if name not in model_properties:
            found.append(f"{child}: in the CRD, no field in the model")
        elif name not in crd_properties:
            found.append(f"{child}: a field of the model, not in the CRD")
        else:
            sub, sub_optional = _model_node(model_properties[name], defs)
            found += schema_differences(crd_properties[name], sub, defs, child, sub_optional)
    for keyword, suffix in (("additionalProperties", "{}"), ("items", "[]")):
        crd_sub, model_sub = crd_node.get(keyword), model_node.get(keyword)
        if isinstance(crd_sub, Mapping) != isinstance(model_sub, Mapping):
            found.append(f"{where}: {keyword} CRD {crd_sub!r} != model {model_sub!r}")
        elif isinstance(crd_sub, Mapping) and isinstance(model_sub, Mapping):
            sub, _ = _model_node(model_sub, defs)
            found += schema_differences(crd_sub, sub, defs, f"{path}{suffix}")
    return found


def differences(crd_schema: Mapping[str, Any]) -> list[str]:
    schema = model_schema()
    root, _ = _model_node(schema, schema["$defs"])
    return schema_differences(crd_schema, root, schema["$defs"])


def test_every_crd_property_is_a_model_field_of_the_same_type_default_and_range() -> None:
    assert differences(crd.object_schema()) == []


def _edit(path: list[str], change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    schema = crd.object_schema()
    node = schema
    for name in path:
        node = node["properties"][name]
    change(node)
    return schema


@pytest.mark.parametrize(
    ("path", "change", "expected"),
    [
        (["spec", "kafka", "partitions"], lambda n: n.update(default=8), ".spec.kafka.partitions"),
        (["spec", "autoscaling", "engine"], lambda n: n["enum"].pop(), "engine: CRD"),
        (["spec", "model", "dim"], lambda n: n.update(maximum=8192), ".spec.model.dim: CRD"),
        (["spec", "triton"], lambda n: n.update(required=["image"]), ".spec.triton: required"),
        (
            ["spec", "ranking"],
            lambda n: n["properties"].update(burst={"type": "integer"}),
            ".spec.ranking.burst: in the CRD, no field",
        ),
        (
            ["spec", "telemetry"],
            lambda n: n["properties"].pop("logLevel"),
            ".spec.telemetry.logLevel: a field of the model",
        ),
        (
            ["spec", "autoscaling", "maxScaleUpFactor"],
            lambda n: n.update(default=2.0),
            "maxScaleUpFactor: default",
        ),
        (
            ["spec", "trainer", "checkpoint", "size"],
            lambda n: n.update(default="5Gi"),
            ".spec.trainer.checkpoint.size: default",
        ),
        (
            ["spec", "triton", "resources"],
            lambda n: n["properties"]["limits"]["additionalProperties"].update(pattern="^x$"),
            ".spec.triton.resources.limits{}: CRD",
        ),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_the_comparison_sees_each_kind_of_difference(
    path: list[str], change: Callable[[dict[str, Any]], None], expected: str
) -> None:
    """The walk above is only evidence if it can fail: each edit of a CRD copy is reported."""
    found = differences(_edit(path, change))
    assert any(expected in line for line in found), found


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_the_model_defaults_a_cr_as_the_crd_does(path: Path) -> None:
    """Same values of the same JSON types: the renderer gets what the API server stores."""
    document = yaml.safe_load(path.read_text())
    parsed = spec.parse(document).spec.to_dict()
    assert _exact(parsed) == _exact(crd_validation.validate(document)["spec"])


def test_an_empty_group_is_defaulted_down_to_its_leaves() -> None:
    parsed = spec.parse_spec({"kafka": {"bootstrapServers": "k:9092"}})
    assert parsed.trainer.checkpoint.size == "10Gi"
    assert parsed.autoscaling.scale_down_stabilization_seconds == 300
    assert parsed.triton.image.startswith("nvcr.io/nvidia/tritonserver:")
    assert parsed.feature_store.dsn_secret is None


@pytest.mark.parametrize("bad", INVALID, ids=[bad.id for bad in INVALID])
def test_the_model_rejects_what_the_crd_rejects_naming_the_field(bad: BadCr) -> None:
    """Types, ranges, enums, patterns and the CEL rules (x-kubernetes-validations)."""
    with pytest.raises(spec.InvalidSpec) as rejected:
        spec.parse(with_value(bad.path, bad.value))
    assert rejected.value.errors[0].field == bad.field, rejected.value.errors
    assert str(rejected.value).startswith(f"{bad.field}: ")


def _cel_messages() -> set[str]:
    """The messages of the CRD's rules one object can break (not the transition rules)."""
    return {
        " ".join(rule["message"].split())
        for _, node in _nodes(crd.object_schema())
        for rule in node.get("x-kubernetes-validations", [])
        if "oldSelf" not in rule["rule"]
    }


def _nodes(node: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    found: list[tuple[str, Mapping[str, Any]]] = [("", node)]
    for name, sub in (node.get("properties") or {}).items():
        found += [(f".{name}{path}", n) for path, n in _nodes(sub)]
    return found


def test_every_cel_rule_of_the_crd_is_a_model_rule_with_its_message() -> None:
    """Each rule is broken by one of the bad CRs; the model reports it with the CRD's message
    at the CRD's fieldPath (the field: test above)."""
    reported = set()
    for bad in INVALID:
        try:
            spec.parse(with_value(bad.path, bad.value))
        except spec.InvalidSpec as invalid:
            reported |= {e.message for e in invalid.errors}
    assert len(_cel_messages()) == 4
    assert _cel_messages() <= reported


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("spec.autoscaling.targetP95Ms", "50"),
        ("spec.autoscaling.enabled", "true"),
        ("spec.kafka.partitions", 6.5),
        ("spec.ranking.replicas", True),
    ],
)
def test_strict_types_like_the_api_server(path: str, value: Any) -> None:
    """The API server takes no "50" for a number, "true" for a boolean: nor does the model."""
    with pytest.raises(spec.InvalidSpec, match=path.replace(".", r"\.")):
        spec.parse(with_value(path, value))


def test_unknown_fields_are_dropped_as_the_api_server_prunes_them() -> None:
    parsed = spec.parse(with_value("spec.ranking", {"replicas": 3, "burst": 9}))
    assert parsed.spec.to_dict()["ranking"] == {"replicas": 3, "timeoutMs": 100}


def test_every_error_is_reported_with_its_field_and_value() -> None:
    document = with_value("spec.kafka.partitions", 0)
    document["spec"]["trainer"] = {"tolerations": [{"operator": "Maybe"}]}
    with pytest.raises(spec.InvalidSpec) as rejected:
        spec.parse(document)
    fields = [e.field for e in rejected.value.errors]
    assert fields == ["spec.kafka.partitions", "spec.trainer.tolerations[0].operator"]
    assert "(got 'Maybe')" in str(rejected.value)


def _state(generation: int, body_spec: dict[str, Any]) -> dict[str, Any]:
    body = minimal()
    body["metadata"].update(generation=generation, uid="u-1", namespace="ns")
    body["spec"] = body_spec
    return body


def test_the_controller_parses_a_spec_once_per_generation() -> None:
    first = _state(1, {"kafka": {"bootstrapServers": "a:9092"}})
    state = CrState(first)
    parsed = state.spec()
    assert isinstance(parsed, spec.RecommenderSpec)
    state.body = copy.deepcopy(first)  # a status write: a new body, the same generation
    state.body["status"] = {"replicas": 2}
    assert state.spec() is parsed
    state.body = _state(2, {"kafka": {"bootstrapServers": "b:9092"}, "ranking": {"replicas": 0}})
    second = state.spec()
    assert isinstance(second, spec.RecommenderSpec)
    assert second.kafka.bootstrap_servers == "b:9092"
    assert state.spec() is second


def test_the_controller_keeps_an_invalid_generation_as_its_errors() -> None:
    state = CrState(_state(3, {"kafka": {"bootstrapServers": "a:9092", "partitions": 0}}))
    invalid = state.spec()
    assert isinstance(invalid, spec.InvalidSpec)
    assert "spec.kafka.partitions" in str(invalid)
    assert state.spec() is invalid
    assert state.valid_spec() is None
    assert state.references() == (set(), set())


def test_references_come_from_the_typed_spec() -> None:
    state = CrState(
        _state(
            1,
            {
                "kafka": {"bootstrapServers": "a:9092", "credentialsSecret": {"name": "kafka"}},
                "featureStore": {"dsnSecret": {"name": "dsn"}},
                "triton": {"modelRepository": {"claimName": "models"}},
            },
        )
    )
    assert state.references() == ({"kafka", "dsn"}, {"models"})
