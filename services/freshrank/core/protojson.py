"""The one JSON mapping of the HTTP services' protobuf messages, and its JSON Schema.

Both services speak protobuf (``application/x-protobuf``) and the proto3 JSON mapping
(``google.protobuf.json_format``: proto field names, int64 as decimal strings, enums by name,
every field printed). Both their OpenAPI documents are generated here from the message
descriptors, so the schema, the parser and the printer cannot drift apart:

- ``to_json`` prints with ``json_format.MessageToDict``;
- ``parse_json`` accepts exactly what ``request_schemas`` documents (a strict subset of what
  ``json_format.Parse`` would take: proto field names only, no numbers as strings, no enum
  numbers) and builds the message. The result equals ``json_format.ParseDict`` of the same body
  (tests/core/test_protojson.py); it is built with the message constructor, ~15x faster for a
  request of 100 ids, after the same checks;
- ``request_schemas`` / ``response_schemas`` give OpenAPI 3.1 (JSON Schema 2020-12) components
  for messages read and written; ``FieldRule`` adds what the proto cannot say (id formats,
  bounds the handler enforces, required fields).
"""

from __future__ import annotations

import base64
import dataclasses
import json
import math
import struct
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

__all__ = [
    "JSON",
    "PROTOBUF",
    "BadJson",
    "FieldRule",
    "Rules",
    "json_list",
    "message_content",
    "parse_json",
    "request_schemas",
    "response_schemas",
    "schema_ref",
    "to_dict",
    "to_json",
]

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
M = TypeVar("M", bound=Message)
Schema = dict[str, Any]
# Message and field descriptors: the stubs type the upb and pure-Python classes apart, and
# their optional links (``message_type``, ``enum_type``) as Optional though the field's type
# says which one is set, so these walks take them untyped.
Descriptor = Any
Field = Any


def schema_ref(name: str) -> Schema:
    """An OpenAPI reference to the component schema ``name``."""
    return {"$ref": f"#/components/schemas/{name}"}


def message_content(message: str) -> Schema:
    """An OpenAPI ``content`` for a proto message: its JSON schema, or its binary encoding."""
    return {
        JSON: {"schema": schema_ref(message)},
        PROTOBUF: {
            "schema": {"type": "string", "format": "binary", "x-proto": f"freshrank.v1.{message}"}
        },
    }


_T = FieldDescriptor
_INT32 = {_T.TYPE_INT32, _T.TYPE_SINT32, _T.TYPE_SFIXED32}
_UINT32 = {_T.TYPE_UINT32, _T.TYPE_FIXED32}
_INT64 = {_T.TYPE_INT64, _T.TYPE_SINT64, _T.TYPE_SFIXED64}
_UINT64 = {_T.TYPE_UINT64, _T.TYPE_FIXED64}
_RANGES = {
    **dict.fromkeys(_INT32, (-(2**31), 2**31 - 1)),
    **dict.fromkeys(_UINT32, (0, 2**32 - 1)),
    **dict.fromkeys(_INT64, (-(2**63), 2**63 - 1)),
    **dict.fromkeys(_UINT64, (0, 2**64 - 1)),
}
_INT64_PATTERN = "^-?[0-9]+$"


class BadJson(ValueError):
    """The body does not follow the message's JSON mapping; the text says where and how."""


@dataclasses.dataclass(frozen=True)
class FieldRule:
    """What a field's schema adds to its proto type (``schema`` is merged over the generated
    one), and whether requests must carry it. The handler enforces the added bounds."""

    schema: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    required: bool = False


Rules = Mapping[str, FieldRule]  # "Message.field" -> rule


# -- printing ----------------------------------------------------------------------------------


def to_dict(message: Message) -> dict[str, Any]:
    """``message`` in the proto3 JSON mapping, every field printed (as the schemas require):
    equal to ``json_format.MessageToDict(message, preserving_proto_field_name=True,
    always_print_fields_with_no_presence=True)`` (tests/core/test_protojson.py), from a printer
    compiled once per message type: json_format walks the descriptor again for every field of
    every message, ~5x slower on a ranking response."""
    printed: dict[str, Any] = _printer(message.DESCRIPTOR)(message)
    return printed


def to_json(message: Message) -> bytes:
    return json.dumps(to_dict(message), separators=(",", ":")).encode()


def json_list(field: str, printed: Sequence[bytes]) -> bytes:
    """``{"field":[...]}`` from messages already printed by ``to_json``: the same bytes as
    ``to_json`` of a message whose one field ``field`` holds them (a batch response from cached
    entries, each printed once)."""
    return b'{"' + field.encode() + b'":[' + b",".join(printed) + b"]}"


Printer = Callable[[Any], Any]
_PRINTERS: dict[str, Printer] = {}
_F32 = struct.Struct("<f")
_NON_FINITE = {math.inf: "Infinity", -math.inf: "-Infinity"}


def _printer(descriptor: Descriptor) -> Printer:
    printer = _PRINTERS.get(descriptor.full_name)
    if printer is None:
        printer = _PRINTERS[descriptor.full_name] = _compile(descriptor)
    return printer


def _compile(descriptor: Descriptor) -> Printer:
    if descriptor.full_name.startswith("google.protobuf."):  # well-known types: their own forms
        return lambda message: json_format.MessageToDict(
            message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
        )
    # Per field, in declaration order: how to print it (fewest calls for the common kinds).
    steps: list[tuple[str, int, Printer]] = []
    for field in descriptor.fields:
        if _is_map(field) or field.is_repeated:
            steps.append((field.name, _WHOLE, _field_printer(field)))
        elif field.has_presence:
            steps.append((field.name, _IF_SET, _value_printer(field)))
        else:
            convert = _value_printer(field)
            steps.append((field.name, _AS_IS if convert is _same else _VALUE, convert))

    def print_message(message: Any) -> dict[str, Any]:
        printed = {}
        for name, how, step in steps:
            if how == _AS_IS:
                printed[name] = getattr(message, name)
            elif how == _VALUE:
                printed[name] = step(getattr(message, name))
            elif how == _WHOLE:
                printed[name] = step(message)
            elif message.HasField(name):
                printed[name] = step(getattr(message, name))
        return printed

    return print_message


_AS_IS, _VALUE, _WHOLE, _IF_SET = range(4)


def _field_printer(field: Field) -> Printer:
    name = field.name
    if _is_map(field):
        convert = _value_printer(_map_value(field))
        return lambda message: {
            _map_key(key): convert(value) for key, value in getattr(message, name).items()
        }
    convert = _value_printer(field)
    if field.is_repeated:
        if convert is _same:
            return lambda message: list(getattr(message, name))
        return lambda message: [convert(value) for value in getattr(message, name)]
    return lambda message: convert(getattr(message, name))


def _value_printer(field: Field) -> Printer:
    kind = field.type
    if kind == _T.TYPE_MESSAGE:
        message_type = field.message_type
        return lambda value: _printer(message_type)(value)
    if kind in _INT64 or kind in _UINT64:
        return str
    if kind == _T.TYPE_FLOAT:
        return _float32
    if kind == _T.TYPE_DOUBLE:
        return _double
    if kind == _T.TYPE_ENUM:
        names = {number: value.name for number, value in field.enum_type.values_by_number.items()}
        return lambda value: names.get(value, value)
    if kind == _T.TYPE_BYTES:
        return lambda value: base64.b64encode(value).decode()
    return _same  # string, bool, 32-bit integers: as they are


def _same(value: Any) -> Any:
    return value


def _map_key(key: Any) -> str:
    if isinstance(key, bool):
        return "true" if key else "false"
    return str(key)


def _double(value: float) -> float | str:
    if math.isfinite(value):
        return value
    return _NON_FINITE.get(value, "NaN")


def _float32(value: float) -> float | str:
    """The shortest decimal that is the same 4-byte float (json_format's ToShortestFloat)."""
    if not math.isfinite(value):
        return _NON_FINITE.get(value, "NaN")
    for precision in _FLOAT_PRECISIONS:
        rounded = float(format(value, precision))
        if _F32.unpack(_F32.pack(rounded))[0] == value:
            return rounded
    return value


_FLOAT_PRECISIONS = tuple(f".{digits}g" for digits in range(6, 18))


# -- parsing -----------------------------------------------------------------------------------


def parse_json(raw: bytes, kind: type[M], rules: Rules | None = None) -> M:
    """The JSON body ``raw`` as a ``kind`` message, or ``BadJson`` naming the first problem."""
    try:
        data = json.loads(raw or b"null")
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadJson(f"body is not valid JSON: {exc}") from None
    except RecursionError:  # e.g. 100,000 nested arrays: the parser gives up, so do we
        raise BadJson("body is not valid JSON: nested too deeply") from None
    if not isinstance(data, dict):
        raise BadJson(f"body must be a JSON object ({kind.DESCRIPTOR.name})")
    args = _message_args(data, kind.DESCRIPTOR, "", rules or {})
    try:
        return kind(**args)
    except (ValueError, TypeError) as exc:  # a check above missed a case: still the client's
        raise BadJson(f"body does not match {kind.DESCRIPTOR.name}: {exc}") from None


def _message_args(data: dict[str, Any], descriptor: Descriptor, path: str, rules: Rules) -> Any:
    fields = descriptor.fields_by_name
    unknown = [name for name in data if name not in fields]
    if unknown:
        raise BadJson(f"unknown fields: {', '.join(sorted(map(str, unknown)))}")
    for name in fields:
        rule = rules.get(f"{descriptor.name}.{name}")
        if rule is not None and rule.required and data.get(name) is None:
            raise BadJson(f'{path}{name} is required (body: a JSON object with "{name}")')
    args = {}
    for name, value in data.items():
        if value is not None:  # proto3 JSON: null is the field's default
            args[name] = _field_value(value, fields[name], path + name, rules)
    return args


def _field_value(value: Any, field: Field, path: str, rules: Rules) -> Any:
    if _is_map(field):
        if not isinstance(value, dict):
            raise BadJson(f"{path} must be an object of {_type_words(_map_value(field))}")
        value_field = _map_value(field)
        return {
            _utf8(key, path): _single(v, value_field, f"{path}[{key!r}]", rules)
            for key, v in value.items()
        }
    if field.is_repeated:
        if not isinstance(value, list):
            raise BadJson(f"{path} must be a list of {_type_words(field)}")
        if field.type == _T.TYPE_STRING and set(map(type, value)) <= {str}:
            _utf8("".join(value), path, value)  # the common case in one C-level pass
            return value
        return [_single(v, field, f"{path}[{i}]", rules) for i, v in enumerate(value)]
    return _single(value, field, path, rules)


def _single(value: Any, field: Field, path: str, rules: Rules) -> Any:
    kind = field.type
    if kind == _T.TYPE_STRING:
        if not isinstance(value, str):
            raise BadJson(f"{path} must be a string")
        return _utf8(value, path)
    if kind == _T.TYPE_BOOL:
        if not isinstance(value, bool):
            raise BadJson(f"{path} must be true or false")
        return value
    if kind in _RANGES:
        return _integer(value, kind, path)
    if kind in (_T.TYPE_FLOAT, _T.TYPE_DOUBLE):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise BadJson(f"{path} must be a number")
        return float(value)
    if kind == _T.TYPE_ENUM:
        names = field.enum_type.values_by_name
        if not isinstance(value, str) or value not in names:
            raise BadJson(f"{path} must be one of {', '.join(names)}")
        return names[value].number
    if kind == _T.TYPE_MESSAGE:
        if not isinstance(value, dict):
            raise BadJson(f"{path} must be an object ({field.message_type.name})")
        return _message_args(value, field.message_type, f"{path}.", rules)
    raise BadJson(f"{path}: {field.type} fields are not supported in JSON bodies")


def _integer(value: Any, kind: int, path: str) -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # JSON Schema (so the OpenAPI document) counts 649.0 as an integer
    elif isinstance(value, str) and (kind in _INT64 or kind in _UINT64):
        value = int(value) if value.lstrip("-").isdigit() and value.isascii() else None
    low, high = _RANGES[kind]
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadJson(f"{path} must be an integer")
    if not low <= value <= high:
        raise BadJson(f"{path} must be an integer from {low} to {high}")
    return value


def _utf8(text: str, path: str, items: Sequence[str] | None = None) -> str:
    """JSON may carry lone surrogates (``"\\ud800"``); a protobuf string is valid UTF-8."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        where = path
        if items is not None:  # name the entry, as a client can fix it
            where = next(f"{path}[{i}]" for i, v in enumerate(items) if not _encodes(v))
        raise BadJson(f"{where} must be valid Unicode (lone surrogate)") from None
    return text


def _encodes(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _is_map(field: Field) -> bool:
    message = field.message_type
    return message is not None and message.GetOptions().map_entry


def _map_value(field: Field) -> Field:
    return field.message_type.fields_by_name["value"]


def _type_words(field: Field) -> str:
    if field.type == _T.TYPE_MESSAGE:
        return f"{field.message_type.name} objects"
    return {_T.TYPE_STRING: "strings", _T.TYPE_BOOL: "booleans"}.get(field.type, "numbers")


# -- JSON Schema -------------------------------------------------------------------------------


def request_schemas(messages: Iterable[Any], rules: Rules | None = None) -> Schema:
    """Components for messages the server reads: what ``parse_json`` accepts (unknown fields
    refused, null is a field's default, int64 as an integer or a decimal string)."""
    return _schemas(messages, rules or {}, request=True)


def response_schemas(messages: Iterable[Any], rules: Rules | None = None) -> Schema:
    """Components for messages the server writes: what ``to_dict`` prints (every field)."""
    return _schemas(messages, rules or {}, request=False)


def _schemas(messages: Iterable[Any], rules: Rules, *, request: bool) -> Schema:
    schemas: Schema = {}
    pending = [message.DESCRIPTOR for message in messages]
    while pending:
        descriptor = pending.pop()
        if descriptor.name in schemas:
            continue
        schemas[descriptor.name] = _message_schema(descriptor, rules, request=request)
        pending.extend(
            field.message_type
            for field in descriptor.fields
            if field.message_type is not None and not _is_map(field)
        )
    return dict(sorted(schemas.items()))


def _message_schema(descriptor: Descriptor, rules: Rules, *, request: bool) -> Schema:
    properties: Schema = {}
    required = []
    for field in descriptor.fields:
        rule = rules.get(f"{descriptor.name}.{field.name}", FieldRule())
        schema = {**_field_schema(field, request=request), **rule.schema}
        if (request and rule.required) or (not request and not field.has_presence):
            required.append(field.name)
        elif request:
            schema = _nullable(schema)
        properties[field.name] = schema
    schema = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    if request:
        schema["additionalProperties"] = False
    return schema


def _field_schema(field: Field, *, request: bool) -> Schema:
    if _is_map(field):
        return {
            "type": "object",
            "additionalProperties": _scalar_schema(_map_value(field), request=request),
        }
    if field.is_repeated:
        return {"type": "array", "items": _scalar_schema(field, request=request)}
    return _scalar_schema(field, request=request)


def _scalar_schema(field: Field, *, request: bool) -> Schema:
    kind = field.type
    if kind == _T.TYPE_STRING:
        return {"type": "string"}
    if kind == _T.TYPE_BOOL:
        return {"type": "boolean"}
    if kind in (_T.TYPE_FLOAT, _T.TYPE_DOUBLE):
        return {"type": "number"}
    if kind in _INT64 or kind in _UINT64:
        low, high = _RANGES[kind]
        as_string = {"type": "string", "pattern": _INT64_PATTERN, "format": "int64"}
        if not request:  # json_format prints 64-bit integers as strings
            return as_string
        return {**as_string, "type": ["integer", "string"], "minimum": low, "maximum": high}
    if kind in _RANGES:
        low, high = _RANGES[kind]
        return {"type": "integer", "minimum": low, "maximum": high}
    if kind == _T.TYPE_ENUM:
        return {"type": "string", "enum": list(field.enum_type.values_by_name)}
    if kind == _T.TYPE_MESSAGE:
        return {"$ref": f"#/components/schemas/{field.message_type.name}"}
    raise ValueError(f"{field.full_name}: type {kind} has no JSON schema here")


def _nullable(schema: Schema) -> Schema:
    if "$ref" in schema:
        return {"anyOf": [schema, {"type": "null"}]}
    kinds = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
    nullable = {**schema, "type": [*kinds, "null"]}
    if "enum" in schema:
        nullable["enum"] = [*schema["enum"], None]
    return nullable
