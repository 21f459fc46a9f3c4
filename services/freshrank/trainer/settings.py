"""Typed settings of the trainer (flags > ``FRESHRANK_*`` env > defaults).

Declared in ``freshrank.core.service_settings``, where the operator's renderer derives the
trainer pod's env var names from them (one source: the names cannot drift apart).
"""

from __future__ import annotations

from freshrank.core.service_settings import DEVICES, QUALITY_METRICS, TrainerSettings

__all__ = ["DEVICES", "QUALITY_METRICS", "TrainerSettings"]
