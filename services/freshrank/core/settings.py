"""Typed settings: a frozen pydantic model per role, read from CLI flags, then ``FRESHRANK_*`` env.

Each field becomes a flag (``--bootstrap-servers``) and an env var
(``FRESHRANK_BOOTSTRAP_SERVERS``); a flag wins over the env var, which wins over the default.
A setting several roles share is declared once, in a mixin here (``ServerSettings``,
``TritonSettings`` ...); a role that needs another default says so with the class keyword
``defaults={...}`` instead of declaring the field again. The env names are derived from the
fields (``env_name``, ``settings_env``), so the operator's renderer and the services cannot
disagree on them. Credentials are ``SecretStr``: never in a repr, a log line or ``--help``.

Why pydantic models and not pydantic-settings: the flags, the explicit ``environ`` of the tests
and errors that name the flag or env var would each need wrapping its sources, and
``BaseSettings`` reads ``os.environ`` on every construction (the tests and benchmarks build
settings directly); the loader below is the part of it we use, and stays explicit.
"""

from __future__ import annotations

import argparse
import copy
import logging
import os
import types
import typing
from collections.abc import Mapping
from typing import Any, ClassVar, Literal, TypeVar

import pydantic
from pydantic import BaseModel, ConfigDict, Field, SecretStr

__all__ = [
    "ENV_PREFIX",
    "CommonSettings",
    "HistorySettings",
    "ModelRepositorySettings",
    "ServerSettings",
    "Settings",
    "SettingsError",
    "TritonSettings",
    "add_arguments",
    "env_name",
    "host_port",
    "load_settings",
    "opt",
    "secret",
    "settings_env",
]

ENV_PREFIX = "FRESHRANK_"
S = TypeVar("S", bound="Settings")
log = logging.getLogger(__name__)


class SettingsError(ValueError):
    """A setting could not be parsed; the message names the flag or env var it came from."""


def opt(default: Any, help: str, **constraints: Any) -> Any:
    """Declare a settings field with its help text (and pydantic constraints: ``ge=1`` ...)."""
    return Field(default, description=help, **constraints)


def secret(help: str) -> Any:
    """Declare a credential: a ``SecretStr`` that is empty unless given."""
    return Field(SecretStr(""), description=help)


class Settings(BaseModel):
    """Base of every settings class: frozen, unknown fields refused, env names derived."""

    model_config = ConfigDict(frozen=True, extra="forbid", protected_namespaces=())

    # Old field name -> current one: the old flag and env var still work, with a warning.
    deprecated_names: ClassVar[Mapping[str, str]] = {}

    def as_env(self) -> dict[str, str]:
        """Every setting as its ``FRESHRANK_*`` env var, secrets in clear (for a subprocess)."""
        fields = type(self).model_fields
        return settings_env(type(self), **{name: getattr(self, name) for name in fields})

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # ``defaults=`` is handled once the fields exist (__pydantic_init_subclass__).
        super().__init_subclass__()

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        """``class X(Base, defaults={"port": 8081})``: X's own default for an inherited field."""
        defaults: Mapping[str, Any] = kwargs.pop("defaults", None) or {}
        super().__pydantic_init_subclass__(**kwargs)
        if not defaults:
            return
        for name, value in defaults.items():
            if name not in cls.model_fields:
                raise TypeError(f"{cls.__name__}: defaults for unknown setting {name!r}")
            field = copy.copy(cls.model_fields[name])
            field.default = value
            cls.__pydantic_fields__[name] = field
        cls.model_rebuild(force=True)


def env_name(cls: type[Settings], field: str) -> str:
    """The env var of ``cls``'s setting ``field``; a name the class lacks is an error."""
    if field not in cls.model_fields:
        raise KeyError(f"{cls.__name__} has no setting {field!r}")
    return ENV_PREFIX + field.upper()


def settings_env(cls: type[Settings], **values: Any) -> dict[str, str]:
    """``{env var: value}`` for settings of ``cls`` given by field name (what a pod is given)."""
    return {env_name(cls, field): _env_value(value) for field, value in values.items()}


def _env_value(value: Any) -> str:
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _flag(field: str) -> str:
    return "--" + field.replace("_", "-")


def _metavar(annotation: Any) -> str:
    if typing.get_origin(annotation) is Literal:
        return "{" + ",".join(str(a) for a in typing.get_args(annotation)) + "}"
    if isinstance(annotation, types.UnionType):  # "X | None": named as X
        annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
    if annotation is SecretStr:
        return "SECRET"
    return str(getattr(annotation, "__name__", "VALUE")).upper()


def add_arguments(parser: argparse.ArgumentParser, cls: type[Settings]) -> None:
    """Add one flag per settings field; absent flags stay absent so env vars can fill in."""
    for name, field in cls.model_fields.items():
        default = field.default
        # A secret's default is code, not a secret (the feature store's SQLite file).
        shown = repr(default.get_secret_value() if isinstance(default, SecretStr) else default)
        parser.add_argument(
            _flag(name),
            dest=name,
            default=argparse.SUPPRESS,  # absent unless given, so env vars and defaults apply
            metavar=_metavar(field.annotation),
            help=f"{field.description or ''} [env {env_name(cls, name)}; default {shown}]",
        )
    for old, new in cls.deprecated_names.items():  # still accepted, no longer shown
        parser.add_argument(_flag(old), dest=new, default=argparse.SUPPRESS, help=argparse.SUPPRESS)


def load_settings(
    cls: type[S],
    args: argparse.Namespace | None = None,
    environ: Mapping[str, str] | None = None,
    **overrides: Any,
) -> S:
    """Build ``cls`` from overrides, then flags, then environment, then defaults.

    A value that does not parse raises ``SettingsError`` naming where it came from.
    """
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for name in cls.model_fields:
        flag_value = getattr(args, name, None) if args is not None else None
        if name in overrides:
            values[name], sources[name] = overrides[name], f"{name}="
        elif flag_value is not None:
            values[name], sources[name] = flag_value, _flag(name)
        elif (found := _from_env(cls, name, env)) is not None:
            sources[name], values[name] = found
    try:
        return cls.model_validate(values)
    except pydantic.ValidationError as exc:
        raise SettingsError(_explain(cls, exc, sources)) from None


def _from_env(cls: type[Settings], name: str, env: Mapping[str, str]) -> tuple[str, str] | None:
    """``(env var, value)`` of setting ``name``, trying its deprecated names after its own."""
    current = env_name(cls, name)
    if current in env:
        return current, env[current]
    for old, new in cls.deprecated_names.items():
        old_env = ENV_PREFIX + old.upper()
        if new == name and old_env in env:
            log.warning("%s is deprecated: set %s", old_env, current)
            return old_env, env[old_env]
    return None


def _explain(cls: type[Settings], exc: pydantic.ValidationError, sources: Mapping[str, str]) -> str:
    problems = []
    for error in exc.errors(include_url=False, include_input=False):
        field = str(error["loc"][0]) if error["loc"] else ""
        if field in cls.model_fields:
            where = sources.get(field) or f"{env_name(cls, field)} (default)"
        else:
            where = cls.__name__
        problems.append(f"{where}: {error['msg']}")
    return "; ".join(problems)


def host_port(url: str) -> str:
    """``host:port`` of a URL given with or without a scheme (tritonclient wants none)."""
    return url.split("://", 1)[-1].rstrip("/")


# --- what several roles share: each setting declared once ------------------------------------


class CommonSettings(Settings):
    """What every role shares."""

    name: str = opt("freshrank", "deployment name; prefixes topics, groups and the Triton model")
    bootstrap_servers: str = opt("127.0.0.1:9092", "Kafka bootstrap servers")
    # SASL: the keys of spec.kafka.credentialsSecret (core.kafka.CREDENTIAL_KEYS), set by the
    # operator; core.kafka.credentials_from_settings turns them into librdkafka config.
    kafka_username: str = opt("", "Kafka SASL username; empty: plaintext, no SASL")
    kafka_password: SecretStr = secret("Kafka SASL password")
    kafka_mechanism: str = opt("", "Kafka SASL mechanism; empty: SCRAM-SHA-512")
    kafka_security_protocol: str = opt("", "Kafka security.protocol; empty: SASL_SSL")
    # The event contract's time window (core.codec.EventTimeWindow): every consumer of the
    # stream must use the same values, so they are common settings.
    event_max_ahead_s: float = opt(
        3600.0, "reject events whose time is more than this after their Kafka record's time", ge=0
    )
    event_max_behind_s: float = opt(
        40 * 365.25 * 86400,
        "reject events whose time is more than this before their record's time (40 years:"
        " historical replays pass, seconds mistaken for milliseconds do not)",
        ge=0,
    )
    otlp_endpoint: str = opt("", "OTLP/HTTP traces endpoint; empty disables export")
    trace_sample_ratio: float = opt(1.0, "fraction of traces sampled (0..1)", ge=0, le=1)
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


class ServerSettings(Settings):
    """A role serving HTTP (its API and/or /healthz, /readyz, /metrics)."""

    host: str = opt("0.0.0.0", "address the HTTP server (API, health, metrics) binds")
    port: int = opt(8080, "port of the HTTP server (API, health, metrics)", ge=0, le=65535)


class ModelRepositorySettings(Settings):
    """A role using the Triton model repository (core.model_repo)."""

    model_repository: str = opt(
        "models", "Triton model repository (the trainer exports, ranking reads)"
    )


class TritonSettings(Settings):
    """A role calling Triton."""

    triton_url: str = opt(
        "127.0.0.1:8000",
        "Triton host:port (a scheme is ignored); the trainer exports without loading when empty",
    )
    triton_live: bool = opt(
        False,
        "use '<model>-live', the one Python-backend model that serves every version in place"
        " (the embedded Triton); off: each version is a Triton model version",
    )


class HistorySettings(Settings):
    """A role handling user histories (the model's input length)."""

    # The feature service called it history_length: an operator of 0.1.0 still renders
    # FRESHRANK_HISTORY_LENGTH for it, so the old name is read too (with a warning).
    deprecated_names: ClassVar[Mapping[str, str]] = {"history_length": "history_len"}

    history_len: int = opt(
        20,
        "user history length: items the feature service keeps per user and the trainer feeds the"
        " model (ranking reads it from each export's manifest)",
        ge=1,
    )
