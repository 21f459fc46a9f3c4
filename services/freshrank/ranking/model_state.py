"""Which model version is serving, and that version's ID tables (opened once, not per request).

The watcher polls the model repository for versions and asks the scorer which is READY; the
newest READY version wins. Its ``export.json`` (``ExportManifest``: history length,
architecture) is read once, and its compact ID tables (``core.id_table``) are memory-mapped,
so item and user strings map to rows exactly as the trainer mapped them; unknown IDs get row 0
(the cold-start row). Opening a version parses nothing big: at 100,000 users the old
``ids.json`` parse held the GIL for 350 ms and stalled the event loop at every version.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from freshrank.core.contracts.manifest import ExportManifest, ManifestError
from freshrank.core.id_table import ID_TABLES_DIR, PADDING_ROW, IdTable
from freshrank.core.model_repo import ModelRepository

__all__ = ["ModelState", "ModelWatcher", "load_model_state"]

log = logging.getLogger(__name__)
_PROBED_VERSIONS = 3  # Triton serves one version; looking at three covers exports racing a poll
_CACHED_STATES = 2
_PROBE_FAILURES_TOLERATED = 3  # consecutive failed probes before the served version is dropped


@dataclasses.dataclass(frozen=True)
class ModelState:
    """One exported version as serving needs it."""

    version: int
    manifest: ExportManifest
    users: IdTable
    items: IdTable
    directory: Path
    known_items: npt.NDArray[np.str_]  # item IDs, most recently trained first
    known_rows: npt.NDArray[np.int64]  # their rows, aligned with known_items
    # row -> rank in known_items (len(known_items) for rows no ID owns): recency lookups
    recency_of_row: npt.NDArray[np.int64] = dataclasses.field(repr=False)

    @property
    def history_len(self) -> int:
        return self.manifest.history_len

    def item_rows(self, item_ids: Sequence[str]) -> npt.NDArray[np.int64]:
        """Rows of ``item_ids`` as the trainer assigned them; unknown -> row 0 (cold start)."""
        return self.items.rows(item_ids)

    def user_row(self, user_id: str) -> int:
        return self.users.row(user_id)

    def recency_ranks(self, item_ids: Sequence[str]) -> npt.NDArray[np.int64]:
        """0 for the most recently trained item, ...; unknown items rank last."""
        return self.recency_of_row[self.item_rows(item_ids)]


def load_model_state(repository: ModelRepository, version: int) -> ModelState:
    """Open one version (blocking file I/O, but no parse: call it off the event loop)."""
    directory = repository.version_dir(version)
    manifest = ExportManifest.read(directory)
    users = IdTable.load(directory / ID_TABLES_DIR, "users")
    items = IdTable.load(directory / ID_TABLES_DIR, "items")
    known_items, known_rows = items.by_recency()
    size = max(manifest.num_items, int(known_rows.max(initial=0)) + 1)
    recency = np.full(size, known_rows.shape[0], dtype=np.int64)
    recency[known_rows] = np.arange(known_rows.shape[0], dtype=np.int64)
    recency[PADDING_ROW] = known_rows.shape[0]
    return ModelState(
        version=version,
        manifest=manifest,
        users=users,
        items=items,
        directory=directory,
        known_items=known_items,
        known_rows=known_rows,
        recency_of_row=recency,
    )


ReadyProbe = Callable[[int], Awaitable[bool]]


class ModelWatcher:
    """Tracks the newest READY version; ``serving`` is None while no version is READY."""

    def __init__(
        self,
        repository: ModelRepository,
        is_ready: ReadyProbe,
        *,
        poll_s: float,
    ) -> None:
        self.repository = repository
        self._is_ready = is_ready
        self._poll_s = poll_s
        self._states: dict[int, ModelState] = {}
        self.serving: ModelState | None = None
        self.last_known: ModelState | None = None  # kept while Triton is down: retrieval needs it
        self._refreshing: asyncio.Task[ModelState | None] | None = None
        self._failed_probes = 0

    async def refresh(self) -> ModelState | None:
        """One poll: find the newest READY version and load its ID maps if new."""
        versions = await asyncio.to_thread(self.repository.versions)
        probe_failed = False
        for version in reversed(versions[-_PROBED_VERSIONS:]):
            ready = await self._ready(version)
            if ready is None:
                probe_failed = True
                if self.serving is not None and self.serving.version == version:
                    break  # the served version's own probe failed: decided below
                continue
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
        if probe_failed and self._keeps_serving():
            # A failed probe (a busy machine, e.g. of the version that just replaced ours)
            # is not "nothing READY": keep serving until failures repeat.
            return self.serving
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

    def _keeps_serving(self) -> bool:
        """The served version survives a few failed polls in a row; after that Triton counts
        as down (requests meanwhile still fail fast through the scorer's circuit breaker)."""
        if self.serving is None:
            return False
        self._failed_probes += 1
        return self._failed_probes < _PROBE_FAILURES_TOLERATED

    async def _state(self, version: int) -> ModelState | None:
        if version not in self._states:
            try:
                state = await asyncio.to_thread(load_model_state, self.repository, version)
            except (OSError, ValueError, KeyError, ManifestError) as exc:
                log.warning("cannot read ids", extra={"version": version, "error": str(exc)})
                return None
            self._states[version] = state
            for old in sorted(self._states)[:-_CACHED_STATES]:
                del self._states[old]
        return self._states[version]
