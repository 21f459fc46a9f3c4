"""Typed settings: one frozen dataclass per role, read from CLI flags, then ``FRESHRANK_*`` env.

Each field becomes a flag (``--bootstrap-servers``) and an env var
(``FRESHRANK_BOOTSTRAP_SERVERS``); a flag wins over the env var, which wins over the default.
Field metadata ``help`` documents the flag.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

__all__ = [
    "CommonSettings",
    "SettingsError",
    "add_arguments",
    "env_name",
    "host_port",
    "load_settings",
    "opt",
]

ENV_PREFIX = "FRESHRANK_"
S = TypeVar("S")


class SettingsError(ValueError):
    """A setting could not be parsed; the message names the flag and env var."""


def opt(default: Any, help: str) -> Any:
    """Declare a settings field with its help text."""
    return dataclasses.field(default=default, metadata={"help": help})


@dataclasses.dataclass(frozen=True, kw_only=True)
class CommonSettings:
    """What every role shares."""

    name: str = opt("freshrank", "deployment name; prefixes topics, groups and the Triton model")
    bootstrap_servers: str = opt("127.0.0.1:9092", "Kafka bootstrap servers")
    # SASL: the keys of spec.kafka.credentialsSecret (core.kafka.CREDENTIAL_KEYS), set by the
    # operator; core.kafka.credentials_from_settings turns them into librdkafka config.
    kafka_username: str = opt("", "Kafka SASL username; empty: plaintext, no SASL")
    kafka_password: str = dataclasses.field(
        default="", repr=False, metadata={"help": "Kafka SASL password"}
    )
    kafka_mechanism: str = opt("", "Kafka SASL mechanism; empty: SCRAM-SHA-512")
    kafka_security_protocol: str = opt("", "Kafka security.protocol; empty: SASL_SSL")
    # The event contract's time window (core.codec.EventTimeWindow): every consumer of the
    # stream must use the same values, so they are common settings.
    event_max_ahead_s: float = opt(
        3600.0, "reject events whose time is more than this after their Kafka record's time"
    )
    event_max_behind_s: float = opt(
        40 * 365.25 * 86400,
        "reject events whose time is more than this before their record's time (40 years:"
        " historical replays pass, seconds mistaken for milliseconds do not)",
    )
    otlp_endpoint: str = opt("", "OTLP/HTTP traces endpoint; empty disables export")
    trace_sample_ratio: float = opt(1.0, "fraction of traces sampled (0..1)")
    log_level: str = opt("INFO", "log level")

    @property
    def events_topic(self) -> str:
        return f"{self.name}.events"

    @property
    def dlq_topic(self) -> str:
        return f"{self.name}.events.dlq"

    @property
    def triton_model(self) -> str:
        return f"{self.name}-ranker"


def env_name(field: str) -> str:
    return ENV_PREFIX + field.upper()


def _flag(field: str) -> str:
    return "--" + field.replace("_", "-")


def _field_type(cls: type[Any], field: dataclasses.Field[Any]) -> type[Any]:
    hint = typing.get_type_hints(cls)[field.name]
    if isinstance(hint, types.UnionType):  # "X | None": parse as X
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        hint = args[0]
    return typing.cast(type[Any], hint)


def _parse(kind: type[Any], raw: str, source: str) -> Any:
    try:
        if kind is bool:
            lowered = raw.strip().lower()
            if lowered in {"1", "true", "yes", "on"}:
                return True
            if lowered in {"0", "false", "no", "off"}:
                return False
            raise ValueError(f"expected true/false, got {raw!r}")
        return kind(raw)
    except ValueError as exc:
        raise SettingsError(f"{source}: {exc}") from exc


def add_arguments(parser: argparse.ArgumentParser, cls: type[Any]) -> None:
    """Add one flag per settings field; defaults stay ``None`` so env vars can fill in."""
    for field in dataclasses.fields(cls):
        kind = _field_type(cls, field)
        help_text = field.metadata.get("help", "")
        default = field.default
        parser.add_argument(
            _flag(field.name),
            dest=field.name,
            default=argparse.SUPPRESS,  # absent unless given, so env vars and defaults apply
            metavar=kind.__name__.upper(),
            help=f"{help_text} [env {env_name(field.name)}; default {default!r}]",
        )


def load_settings(
    cls: type[S],
    args: argparse.Namespace | None = None,
    environ: Mapping[str, str] | None = None,
    **overrides: Any,
) -> S:
    """Build ``cls`` from overrides, then flags, then environment, then defaults."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for field in dataclasses.fields(typing.cast(Any, cls)):
        kind = _field_type(cls, field)
        flag_value = getattr(args, field.name, None) if args is not None else None
        if field.name in overrides:
            values[field.name] = overrides[field.name]
        elif flag_value is not None:
            values[field.name] = _parse(kind, str(flag_value), _flag(field.name))
        elif env_name(field.name) in env:
            values[field.name] = _parse(kind, env[env_name(field.name)], env_name(field.name))
    return cls(**values)


def host_port(url: str) -> str:
    """``host:port`` of a URL given with or without a scheme (tritonclient wants none)."""
    return url.split("://", 1)[-1].rstrip("/")
