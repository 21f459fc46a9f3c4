"""Publishing a trained model: repository version -> Triton load -> READY -> manifest -> prune.

The learner writes ``model.pt`` and ``ids.json`` into a staging directory between two
training steps (so the model is consistent); everything slow happens here, concurrently with
training. ``ModelRepository.write_version`` renames the version into place and then asks for
its ``ExportRecord``; we produce that record only once Triton reports the version READY, so
the manifest entry carries the measured freshness and ranking never reads a record of a
version Triton is not serving. Triton keeps serving the previous version until then and
swaps atomically (``version_policy: latest 1``). A version that fails to load is removed again.

With ``LiveTritonControl`` (the embedded Triton) a version is not a Triton model version: the
one long-lived ``<name>-ranker-live`` model loads each new version in place (no Triton model
load; ``freshrank/embedded/live_backend.cc``) and a version is READY once it answers a probe
naming it; "load" then only makes sure the live model itself is loaded.

The trainer owns model versions, so it also keeps Triton serving them (``watch``): Triton runs
with explicit model control and loads nothing by itself, so after Triton restarts (or unloads
the model) nothing would be served until the next export, which on a quiet stream may never
come. Every ``watch_s`` the watchdog asks Triton whether the latest good version (the newest
with a manifest record) is READY and loads it when not. The ranking replicas only observe;
one writer of Triton's model control, not one per replica. ``freshrank_trainer_model_version``
is the version Triton actually serves (0 while it serves none), so the CR status follows the
truth, not the last export.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import tritonclient.http.aio as triton_http
from opentelemetry import trace
from tritonclient.utils import InferenceServerException

from freshrank.core.contracts.manifest import ExportManifest, ExportRecord, ExportTimings
from freshrank.core.model_repo import ModelRepository, live_model_name, triton_inputs
from freshrank.core.triton_auth import admin_headers
from freshrank.trainer.metrics import TrainerMetrics

__all__ = ["ExportFailed", "Exporter", "LiveTritonControl", "StagedExport", "TritonControl"]

log = logging.getLogger(__name__)
tracer = trace.get_tracer("freshrank.trainer")
_READY_POLL_S = 0.05


class ExportFailed(RuntimeError):
    """The version could not be made READY on Triton (it has been removed again)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class StagedExport:
    """A model written by the learner (with its ``export.json``), and what its record adds."""

    directory: Path
    events_covered: int
    last_event_timestamp_ms: int  # newest event time (the event's own timestamp)
    newest_ingest_ms: int  # Kafka timestamp of the newest message covered
    metrics: dict[str, float]
    offsets: dict[str, int] = dataclasses.field(default_factory=dict)  # "topic:partition"
    id_stats: dict[str, int] = dataclasses.field(default_factory=dict)
    staged_at_ms: int = dataclasses.field(default_factory=lambda: int(time.time() * 1000))


class TritonControl:
    """Explicit model control over Triton's HTTP API (async client).

    ``admin_key``: the key Triton's restricted control APIs expect (``core.triton_auth``);
    empty for a server started without one.
    """

    def __init__(self, url: str, admin_key: str = "") -> None:
        self.url = url
        self._client = triton_http.InferenceServerClient(url)
        self._control_headers = admin_headers(admin_key)

    async def load(self, model: str) -> None:
        await self._client.load_model(model, headers=self._control_headers)

    async def is_ready(self, model: str, version: int, timeout_s: float) -> bool:
        async with asyncio.timeout(timeout_s):
            return bool(await self._client.is_model_ready(model, str(version)))

    async def wait_ready(self, model: str, version: int, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not await self._client.is_model_ready(model, str(version)):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{model} version {version} not READY after {timeout_s}s")
            await asyncio.sleep(_READY_POLL_S)

    async def load_and_wait(self, model: str, version: int, timeout_s: float) -> None:
        async with asyncio.timeout(timeout_s):
            await self.load(model)
        await self.wait_ready(model, version, timeout_s)

    async def close(self) -> None:
        await self._client.close()


class LiveTritonControl(TritonControl):
    """Model control of the live model: one Triton model serving every version in place.

    ``load`` loads the live model when Triton does not have it (never reloads a loaded one:
    that would drop its loaded versions); a version is READY when the live model answers for it.
    """

    async def load(self, model: str) -> None:
        live = live_model_name(model)
        with contextlib.suppress(Exception):  # not READY or unknown: load it below
            if await self._client.is_model_ready(live):
                return
        await self._client.load_model(live, headers=self._control_headers)

    async def is_ready(self, model: str, version: int, timeout_s: float) -> bool:
        async with asyncio.timeout(timeout_s):
            return await self._answers(model, version)

    async def wait_ready(self, model: str, version: int, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not await self._answers(model, version):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{model} version {version} not served after {timeout_s}s")
            await asyncio.sleep(_READY_POLL_S)

    async def _answers(self, model: str, version: int) -> bool:
        padding = np.zeros(1, dtype=np.int64)  # one padding row: any answer will do
        inputs = triton_inputs(triton_http.InferInput, 0, padding, padding, version)
        try:
            await self._client.infer(live_model_name(model), inputs)
        except InferenceServerException as exc:  # Triton answered: not (yet) served
            log.debug("live model does not answer for version %s: %s", version, exc)
            return False
        return True  # anything else (Triton unreachable) propagates, as for is_model_ready


class Exporter:
    """Publishes staged exports one at a time (repository I/O on its own thread)."""

    def __init__(
        self,
        repository: ModelRepository,
        triton: TritonControl | None,
        metrics: TrainerMetrics,
        *,
        keep_versions: int = 3,
        ready_timeout_s: float = 120.0,
        watch_s: float = 1.0,
    ) -> None:
        self.repository = repository
        self.triton = triton
        self.metrics = metrics
        self.keep_versions = keep_versions
        self.ready_timeout_s = ready_timeout_s
        self.watch_s = watch_s
        self.served_version = 0  # what Triton serves, as last seen (0: nothing)
        self.reloads = 0  # times the watchdog had to load a version Triton had lost
        self._io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="exporter")
        # One model-control operation at a time: an export's load or the watchdog's.
        self._control = asyncio.Lock()

    async def watch(self, stop: asyncio.Event) -> None:
        """Keep Triton serving the latest good version until ``stop`` (also at startup)."""
        while not stop.is_set():
            try:
                await self.ensure_served()
            except Exception:  # never let one bad pass end the watchdog
                log.exception("model watchdog pass failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.watch_s)

    async def ensure_served(self) -> int:
        """One watchdog pass: load the latest good version if Triton does not serve it.

        Returns the version Triton serves afterwards (0: none, e.g. Triton is down). Skipped
        while an export holds model control (it reports its own version when READY)."""
        if self.triton is None or self._control.locked():
            return self.served_version
        async with self._control:
            loop = asyncio.get_running_loop()
            latest = await loop.run_in_executor(self._io, self.repository.latest_good_version)
            if latest is None and isinstance(self.triton, LiveTritonControl):
                await self._prepare_live(loop)
            served = 0 if latest is None else await self._serve(latest)
        self._set_served(served)
        return served

    async def _prepare_live(self, loop: asyncio.AbstractEventLoop) -> None:
        """Before the first export: start the live model, so its one-time cost (loading
        the backend and its libtorch) is paid now and not by the first version's freshness."""
        assert self.triton is not None
        try:
            await loop.run_in_executor(self._io, self.repository.write_live_model)
            await self.triton.load(self.repository.model_name)
        except Exception as exc:  # Triton not up yet: the next pass tries again
            log.debug("live model not loaded yet: %s", exc)

    async def _serve(self, version: int) -> int:
        assert self.triton is not None
        model = self.repository.model_name
        try:
            if await self.triton.is_ready(model, version, self.watch_s + 1.0):
                return version
        except Exception as exc:  # unreachable (restarting): nothing is served right now
            log.debug("Triton not reachable: %s", exc)
            return 0
        self._set_served(0)  # true while the load runs (a model load can take seconds)
        log.warning("Triton does not serve the latest good version: loading it",
                    extra={"version": version})  # fmt: skip
        try:
            await self.triton.load_and_wait(model, version, self.ready_timeout_s)
        except Exception as exc:  # the next pass tries again
            log.warning("could not load version %s: %s", version, exc)
            return 0
        self.reloads += 1
        log.info("Triton serves the latest good version again", extra={"version": version})
        return version

    def _set_served(self, version: int) -> None:
        self.served_version = version
        self.metrics.model_version.set(version)

    async def publish(self, staged: StagedExport) -> ExportRecord:
        """Write the next version, load it on Triton, wait until READY; record and prune."""
        async with self._control:
            return await self._publish(staged)

    async def _publish(self, staged: StagedExport) -> ExportRecord:
        loop = asyncio.get_running_loop()
        with tracer.start_as_current_span("export") as span:
            span.set_attribute("freshrank.events_covered", staged.events_covered)
            try:
                record = await loop.run_in_executor(self._io, self._write, staged, loop)
            except Exception as exc:
                self.metrics.exports.labels(outcome="failed").inc()
                span.record_exception(exc)
                span.set_status(trace.Status(trace.StatusCode.ERROR, str(exc)))
                raise ExportFailed(str(exc)) from exc
            span.set_attribute("freshrank.model.version", record.version)
            if record.timings is not None:
                span.set_attribute("freshrank.freshness_s", record.timings.freshness_s)
        self._observe(record, staged)
        removed = await loop.run_in_executor(self._io, self.repository.prune, self.keep_versions)
        if removed:
            log.info("pruned model versions", extra={"versions": removed})
        return record

    def _write(self, staged: StagedExport, loop: asyncio.AbstractEventLoop) -> ExportRecord:
        attempted: list[int] = []

        def populate(directory: Path) -> None:
            for path in staged.directory.iterdir():
                if path.is_dir():  # the ID tables (ids/)
                    shutil.copytree(path, directory / path.name)
                else:
                    shutil.copy2(path, directory / path.name)

        def record(version: int) -> ExportRecord:
            attempted.append(version)
            manifest = ExportManifest.read(self.repository.version_dir(version))
            if self.triton is not None:
                load = self.triton.load_and_wait(
                    self.repository.model_name, version, self.ready_timeout_s
                )
                asyncio.run_coroutine_threadsafe(load, loop).result()
            ready_ms = int(time.time() * 1000)
            return ExportRecord(
                version=version,
                model=manifest,
                events_covered=staged.events_covered,
                last_event_timestamp_ms=staged.last_event_timestamp_ms,
                exported_at_ms=ready_ms,
                metrics=dict(staged.metrics),
                timings=ExportTimings(
                    last_ingest_timestamp_ms=staged.newest_ingest_ms,
                    ready_at_ms=ready_ms,
                    freshness_s=max(0.0, (ready_ms - staged.newest_ingest_ms) / 1000.0),
                    # Where the time went: stream -> staged model, staged -> READY on Triton.
                    staged_s=max(0.0, (staged.staged_at_ms - staged.newest_ingest_ms) / 1000.0),
                    publish_s=(ready_ms - staged.staged_at_ms) / 1000.0,
                ),
                offsets=dict(staged.offsets),
                id_stats=dict(staged.id_stats),
                served_by_triton=self.triton is not None,
            )

        try:
            return self.repository.write_version(populate, record)
        except BaseException:
            for version in attempted:  # renamed into place but never READY: take it back
                shutil.rmtree(self.repository.version_dir(version), ignore_errors=True)
            raise

    def _observe(self, record: ExportRecord, staged: StagedExport) -> None:
        self.metrics.exports.labels(outcome="ok").inc()
        freshness_s = record.timings.freshness_s if record.timings is not None else 0.0
        self.metrics.freshness.observe(freshness_s)
        self._set_served(record.version)
        self.metrics.last_export.set(record.exported_at_ms / 1000.0)
        self.metrics.last_exported_event.set(staged.newest_ingest_ms / 1000.0)
        log.info(
            "model exported",
            extra={
                "version": record.version,
                "events_covered": record.events_covered,
                "freshness_s": freshness_s,
            },
        )

    async def close(self) -> None:
        self._io.shutdown(wait=True)
        if self.triton is not None:
            await self.triton.close()
