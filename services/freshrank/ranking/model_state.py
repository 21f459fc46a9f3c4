"""Which model version is serving, and that version's ID maps (loaded once, not per request).

The watcher polls the model repository for versions and asks the scorer which is READY; the
newest READY version wins. Its ``ids.json`` is read into ``IdMap``s so item and user strings
map to rows exactly as the trainer mapped them; unknown IDs get row 0 (the cold-start row).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from itertools import repeat
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from freshrank.core.model_repo import IDS_FILE, ExportRecord, ModelRepository
from freshrank.model import PADDING_ROW, IdMap

__all__ = ["ModelState", "ModelWatcher", "history_len_of", "load_model_state"]

log = logging.getLogger(__name__)
_PROBED_VERSIONS = 3  # Triton serves one version; looking at three covers exports racing a poll
_CACHED_STATES = 2
_PROBE_FAILURES_TOLERATED = 3  # consecutive failed probes before the served version is dropped


@dataclasses.dataclass(frozen=True)
class ModelState:
    """One exported version as serving needs it."""

    version: int
    users: IdMap
    items: IdMap
    history_len: int
    known_items: npt.NDArray[np.object_]  # item IDs, most recently trained first
    known_rows: npt.NDArray[np.int64]  # their rows, aligned with known_items
    directory: Path
    # Plain ID -> row / recency dicts for the hot path (C-level lookups, no per-ID Python).
    item_row: dict[str, int] = dataclasses.field(default_factory=dict, repr=False)
    user_row: dict[str, int] = dataclasses.field(default_factory=dict, repr=False)
    recency: dict[str, int] = dataclasses.field(default_factory=dict, repr=False)

    def item_rows(self, item_ids: Sequence[str]) -> npt.NDArray[np.int64]:
        """Rows of ``item_ids`` as the trainer assigned them; unknown -> row 0 (cold start)."""
        return np.fromiter(
            map(self.item_row.get, item_ids, repeat(PADDING_ROW)),
            dtype=np.int64,
            count=len(item_ids),
        )


def history_len_of(ids: dict[str, Any], record: ExportRecord | None, default: int) -> int:
    """The history length the export declares (ids.json, then manifest extra), else ``default``."""
    if isinstance(ids.get("history_len"), int):
        return int(ids["history_len"])
    extra = record.extra if record is not None else {}
    if isinstance(extra.get("history_len"), int):
        return int(extra["history_len"])
    model = extra.get("model")
    if isinstance(model, dict) and isinstance(model.get("history_len"), int):
        return int(model["history_len"])
    return default


def _by_recency(table: dict[str, Any]) -> tuple[npt.NDArray[np.object_], npt.NDArray[np.int64]]:
    rows: dict[str, int] = {item: int(row) for item, row in table["rows"].items()}
    last_seen: dict[str, int] = {str(r): int(s) for r, s in table.get("last_seen", {}).items()}
    ordered = sorted(rows.items(), key=lambda pair: (-last_seen.get(str(pair[1]), 0), pair[1]))
    ids = np.array([item for item, _ in ordered], dtype=object)
    return ids, np.array([row for _, row in ordered], dtype=np.int64)


def load_model_state(
    repository: ModelRepository, version: int, default_history_len: int
) -> ModelState:
    """Read one version's ids.json (blocking: call it off the event loop)."""
    directory = repository.version_dir(version)
    data = json.loads((directory / IDS_FILE).read_text())
    known_items, known_rows = _by_recency(data["items"])
    users, items = IdMap.from_json(data["users"]), IdMap.from_json(data["items"])
    return ModelState(
        version=version,
        users=users,
        items=items,
        history_len=history_len_of(data, repository.record(version), default_history_len),
        known_items=known_items,
        known_rows=known_rows,
        directory=directory,
        item_row={item: items.row(item) for item in items.known_ids()},
        user_row={user: users.row(user) for user in users.known_ids()},
        recency={item: rank for rank, item in enumerate(known_items.tolist())},
    )


ReadyProbe = Callable[[int], Awaitable[bool]]


class ModelWatcher:
    """Tracks the newest READY version; ``serving`` is None while no version is READY."""

    def __init__(
        self,
        repository: ModelRepository,
        is_ready: ReadyProbe,
        *,
        default_history_len: int,
        poll_s: float,
    ) -> None:
        self.repository = repository
        self._is_ready = is_ready
        self._default_history_len = default_history_len
        self._poll_s = poll_s
        self._states: dict[int, ModelState] = {}
        self.serving: ModelState | None = None
        self.last_known: ModelState | None = None  # kept while Triton is down: retrieval needs it
        self._refreshing: asyncio.Task[ModelState | None] | None = None
        self._failed_probes = 0

    async def refresh(self) -> ModelState | None:
        """One poll: find the newest READY version and load its ID maps if new."""
        versions = await asyncio.to_thread(self.repository.versions)
        for version in reversed(versions[-_PROBED_VERSIONS:]):
            ready = await self._ready(version)
            if ready is None and self._keeps_serving(version):
                return self.serving  # one failed probe (a busy machine) is not "not READY"
            if not ready:
                continue
            self._failed_probes = 0
            state = await self._state(version)
            if state is None:
                continue
            if self.serving is None or self.serving.version != version:
                log.info("serving model version", extra={"version": version})
            self.serving = self.last_known = state
            return state
        self.serving = None
        if self.last_known is None and versions:
            # Nothing READY (Triton down since we started): the newest export's known items
            # still make a better fallback than nothing.
            self.last_known = await self._state(versions[-1])
        return None

    async def catch_up(self, stale_version: int) -> ModelState | None:
        """Triton dropped ``stale_version``: refresh now instead of at the next poll.

        Every request that hit the dropped version calls this at about the same moment; they
        share one refresh (single flight) rather than each probing Triton.
        """
        if self.serving is not None and self.serving.version != stale_version:
            return self.serving  # another caller already moved on
        if self._refreshing is None or self._refreshing.done():
            self._refreshing = asyncio.ensure_future(self.refresh())
        return await asyncio.shield(self._refreshing)

    async def run(self, on_refresh: Callable[[ModelState | None], None] | None = None) -> None:
        """Poll forever (cancel to stop); ``on_refresh`` sees each poll's serving state."""
        while True:
            try:
                state = await self.refresh()
                if on_refresh is not None:
                    on_refresh(state)
            except Exception:  # a broken poll must not stop the watcher
                log.exception("model refresh failed")
            await asyncio.sleep(self._poll_s)

    async def _ready(self, version: int) -> bool | None:
        """Triton's answer; ``None`` when the probe itself failed (unreachable, timed out)."""
        try:
            return await self._is_ready(version)
        except Exception as exc:
            log.debug("readiness probe failed", extra={"version": version, "error": str(exc)})
            return None

    def _keeps_serving(self, version: int) -> bool:
        """The served version survives a few failed probes in a row; after that Triton counts
        as down (requests meanwhile still fail fast through the scorer's circuit breaker)."""
        if self.serving is None or self.serving.version != version:
            return False
        self._failed_probes += 1
        return self._failed_probes < _PROBE_FAILURES_TOLERATED

    async def _state(self, version: int) -> ModelState | None:
        if version not in self._states:
            try:
                state = await asyncio.to_thread(
                    load_model_state, self.repository, version, self._default_history_len
                )
            except (OSError, ValueError, KeyError) as exc:
                log.warning("cannot read ids", extra={"version": version, "error": str(exc)})
                return None
            self._states[version] = state
            for old in sorted(self._states)[:-_CACHED_STATES]:
                del self._states[old]
        return self._states[version]
