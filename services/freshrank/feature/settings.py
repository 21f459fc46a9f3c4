"""Feature service settings (flags and ``FRESHRANK_*`` env vars).

Declared in ``freshrank.core.service_settings``, where the operator's renderer derives the
feature pod's env var names from them.
"""

from __future__ import annotations

from freshrank.core.service_settings import FeatureSettings

__all__ = ["FeatureSettings"]
