"""Structured logs: one JSON object per line, with the active trace id when there is one."""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Sequence
from typing import Any

from opentelemetry import trace

__all__ = ["JsonFormatter", "setup_logging"]

_STANDARD_ATTRS = frozenset(vars(logging.makeLogRecord({})))


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (a traceback is a string field, ``exc``)."""

    def extras(self, record: logging.LogRecord) -> dict[str, Any]:
        """The record's own fields (``extra=``); subclasses drop or reshape library ones."""
        return {
            k: v for k, v in vars(record).items() if k not in _STANDARD_ATTRS and k != "message"
        }

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        span = trace.get_current_span().get_span_context()
        if span.is_valid:
            payload["trace_id"] = f"{span.trace_id:032x}"
        payload.update(self.extras(record))
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str)


def setup_logging(
    level: str = "INFO",
    *,
    json_output: bool = True,
    formatter: JsonFormatter | None = None,
    filters: Sequence[logging.Filter] = (),
) -> logging.Handler:
    """Route every logger to one stderr handler (JSON lines); returns that handler."""
    handler = logging.StreamHandler(sys.stderr)
    for record_filter in filters:
        handler.addFilter(record_filter)
    if json_output:
        handler.setFormatter(formatter or JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    return handler
