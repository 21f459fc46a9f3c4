"""Typed settings of the ranking service (flags > ``FRESHRANK_*`` env > defaults).

Declared in ``freshrank.core.service_settings``, where the operator's renderer derives the
ranking pod's env var names from them.
"""

from __future__ import annotations

from freshrank.core.service_settings import SCORERS, TRITON_PROTOCOLS, RankingSettings

__all__ = ["SCORERS", "TRITON_PROTOCOLS", "RankingSettings"]
