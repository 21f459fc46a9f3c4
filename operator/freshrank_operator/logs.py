"""The operator's log lines: Kopf's records made compact, its per-tick chatter dropped.

Kopf's object loggers attach ``settings`` (the whole ``OperatorSettings``, ~2 KB as text),
``k8s_skip`` and ``k8s_ref`` to every record, and log ``Timer '...' succeeded.`` at INFO on
every timer tick of every CR: at 20 idle CRs that was ~700 MiB of logs a day. Here a record
names its CR as ``cr: "namespace/name"``, and Kopf's routine success lines are dropped (our
handlers log each reconcile's outcome themselves, once); Kopf's warnings and errors stay.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

from freshrank.core.logs import JsonFormatter, setup_logging

__all__ = ["KopfRoutineFilter", "OperatorJsonFormatter", "setup_operator_logging"]

_KOPF_EXTRAS = frozenset({"settings", "k8s_skip", "k8s_ref"})
# Kopf's success lines (kopf/_core/actions/execution.py, reactor/processing.py).
_ROUTINE = re.compile(
    r"(Timer|Handler|Daemon) '[^']*' succeeded\.|\w+ is processed: \d+ succeeded; 0 failed\."
)


class OperatorJsonFormatter(JsonFormatter):
    def extras(self, record: logging.LogRecord) -> dict[str, Any]:
        fields = {k: v for k, v in super().extras(record).items() if k not in _KOPF_EXTRAS}
        ref = getattr(record, "k8s_ref", None)
        if isinstance(ref, Mapping) and ref.get("name"):
            namespace = ref.get("namespace")
            fields.setdefault("cr", f"{namespace}/{ref['name']}" if namespace else ref["name"])
        return fields


class KopfRoutineFilter(logging.Filter):
    """Drop Kopf's INFO "... succeeded." / "... is processed" lines (failures still pass)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.INFO or not record.name.startswith("kopf"):
            return True
        return _ROUTINE.fullmatch(record.getMessage()) is None


# The Kubernetes client's HTTP library (lightkube's httpx2) logs every request at INFO: a status
# write or an apply is the operator's decision, logged by the operator once, not per request.
HTTP_LOGGERS = ("httpx2", "httpcore2")


def setup_operator_logging(level: str = "INFO") -> logging.Handler:
    handler = setup_logging(level, formatter=OperatorJsonFormatter(), filters=[KopfRoutineFilter()])
    for name in HTTP_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    return handler
