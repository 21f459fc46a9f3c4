"""Deadline-bound Triton inference with bounded retries and a circuit breaker.

One client lives for the whole service: HTTP is our lean ``triton_http`` client over
kept-alive connections, gRPC is tritonclient over one channel. Every call names the model
version explicitly, carries the caller's trace context in a ``traceparent`` header, and either
returns scores within the deadline or raises ``ScoringUnavailable`` so the ranker can fall
back. After ``breaker_failures`` consecutive failures the breaker skips Triton for
``breaker_open_s``: a dead or stalled Triton then costs callers nothing instead of a full
deadline each.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from freshrank.core.model_repo import OUTPUT, live_model_name, ranking_arrays, triton_inputs
from freshrank.core.settings import host_port
from freshrank.ranking.triton_http import TritonHttpClient

__all__ = [
    "CircuitBreaker",
    "Rows",
    "Scores",
    "ScoringUnavailable",
    "TritonScorer",
    "VersionUnavailable",
]

_tracer = trace.get_tracer("freshrank.ranking")
# Triton's answer (HTTP 503/404, gRPC UNAVAILABLE/NOT_FOUND) for a version it no longer serves,
# and the live model's (kNotLoaded of freshrank/embedded/live_backend.cc) for one it lacks.
_UNKNOWN_VERSION = ("Request for unknown model", "is not loaded in the live model")
Rows = npt.NDArray[np.int64]
Scores = npt.NDArray[np.float32]


class ScoringUnavailable(RuntimeError):
    """The model could not score in time; ``reason`` becomes the fallback metric's label."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


class VersionUnavailable(ScoringUnavailable):
    """Triton does not serve this version (any more): a newer one has replaced it.

    Not a fault of Triton: the breaker ignores it and the ranker retries on the newer version.
    """

    def __init__(self, version: int, detail: str = "") -> None:
        super().__init__("version_unavailable", detail or f"version {version}")
        self.version = version


class CircuitBreaker:
    """Closed -> open after N consecutive failures spanning ``min_failing_s`` -> half-open
    after ``open_s``.

    The span is what tells a dead or stuck Triton from one slow moment: a 60 ms stall on a busy
    machine fails every request in flight at once (10 at 200 req/s), which is N consecutive
    failures but not a Triton to skip; opening then cost a whole ``open_s`` of fallbacks (in
    ``freshrank bench ranking --trainer-beside``, 7 deadline misses became 1,138 fallbacks).
    Neither did a span of 250 ms: at 100,000 users with a trainer beside, the whole machine
    (the in-process peer too) stalls that long at times. A Triton that is down keeps failing
    past the span and opens the circuit as before.
    """

    def __init__(
        self,
        failures: int,
        open_s: float,
        clock: Callable[[], float] = time.monotonic,
        *,
        min_failing_s: float = 0.5,
    ) -> None:
        self._threshold = max(1, failures)
        self._open_s = open_s
        self._min_failing_s = min_failing_s
        self._clock = clock
        self._failures = 0
        self._failing_since = 0.0
        self._open_until = 0.0

    @property
    def is_open(self) -> bool:
        return self._clock() < self._open_until

    def success(self) -> None:
        self._failures = 0

    def failure(self) -> None:
        now = self._clock()
        if self._failures == 0:
            self._failing_since = now
        self._failures += 1
        failing_for = now - self._failing_since
        if self._failures >= self._threshold and failing_for >= self._min_failing_s:
            self._open_until = now + self._open_s
            # Half-open afterwards: the streak goes on, so one more failure re-opens at once.


class TritonScorer:
    """Scores candidates for one user on a given model version in Triton.

    ``live``: call the live model (``core.model_repo.live_model_name``), one long-lived
    model serving every version in place (``freshrank/embedded/live_backend.cc``), naming the
    version in its ``model_version`` input; a version is READY there once it answers a probe.
    Otherwise each version is a Triton model version (the production ``pytorch_libtorch``
    layout).
    """

    name = "triton"

    def __init__(
        self,
        url: str,
        model_name: str,
        *,
        protocol: str = "http",
        deadline_s: float = 0.05,
        retries: int = 1,
        breaker: CircuitBreaker | None = None,
        live: bool = False,
    ) -> None:
        self.model_name = model_name
        self.live = live
        self._target = live_model_name(model_name) if live else model_name
        self.protocol = protocol
        self.deadline_s = deadline_s
        self.retries = retries
        self.breaker = breaker or CircuitBreaker(5, 1.0)
        self._http: TritonHttpClient | None = None
        self._grpc: Any = None
        if protocol == "grpc":
            import tritonclient.grpc.aio as grpc_client

            self._grpc_input: Any = grpc_client.InferInput
            self._grpc = grpc_client.InferenceServerClient(host_port(url))
        else:
            self._http = TritonHttpClient(url)

    async def close(self) -> None:
        await (self._http or self._grpc).close()

    async def is_ready(self, version: int) -> bool:
        async with asyncio.timeout(max(self.deadline_s, 1.0)):
            if not self.live:
                if self._http is not None:
                    return await self._http.is_ready(self.model_name, str(version))
                return bool(await self._grpc.is_model_ready(self.model_name, str(version)))
            one = np.zeros(1, dtype=np.int64)
            try:
                await self._infer(version, 0, one, one, {})
            except Exception as exc:
                if any(marker in str(exc) for marker in _UNKNOWN_VERSION):
                    return False  # Triton is up; this version is not (yet) served
                raise
            return True

    async def score(self, version: int, user_row: int, history: Rows, candidates: Rows) -> Scores:
        """Scores (float32, aligned with ``candidates``) or ``ScoringUnavailable``."""
        if self.breaker.is_open:
            raise ScoringUnavailable("circuit_open")
        with _tracer.start_as_current_span(
            "triton.infer",
            kind=SpanKind.CLIENT,
            attributes={
                "triton.model": self.model_name,
                "triton.model_version": version,
                "triton.protocol": self.protocol,
                "ranking.candidates": int(candidates.shape[0]),
            },
        ) as span:
            headers: dict[str, str] = {}
            propagate.inject(headers)  # traceparent of this span: Triton joins our trace
            try:
                scores = await self._infer_with_retries(
                    version, user_row, history, candidates, headers
                )
            except VersionUnavailable as exc:
                span.set_status(Status(StatusCode.ERROR, str(exc)))
                raise
            except ScoringUnavailable as exc:
                self.breaker.failure()
                span.set_status(Status(StatusCode.ERROR, str(exc)))
                raise
            self.breaker.success()
            return scores

    async def _infer_with_retries(
        self,
        version: int,
        user_row: int,
        history: Rows,
        candidates: Rows,
        headers: dict[str, str],
    ) -> Scores:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.deadline_s
        last_error: Exception | None = None
        for _ in range(self.retries + 1):
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise ScoringUnavailable("deadline", f"spent after {last_error!r}")
            try:
                async with asyncio.timeout(remaining):
                    return await self._infer(version, user_row, history, candidates, headers)
            except TimeoutError:
                raise ScoringUnavailable("deadline", f"{self.deadline_s * 1000:.0f} ms") from None
            except Exception as exc:  # connection refused/reset, Triton error: retry, bounded
                if any(marker in str(exc) for marker in _UNKNOWN_VERSION):  # retry cannot help
                    raise VersionUnavailable(version, str(exc)) from None
                last_error = exc
        raise ScoringUnavailable("triton_error", str(last_error))

    async def _infer(
        self,
        version: int,
        user_row: int,
        history: Rows,
        candidates: Rows,
        headers: dict[str, str],
    ) -> Scores:
        live_version = version if self.live else None
        model_version = "" if self.live else str(version)
        scores: Scores
        if self._http is not None:
            arrays = ranking_arrays(user_row, history, candidates, live_version)
            outputs = await self._http.infer(
                self._target, arrays, (OUTPUT,), version=model_version, headers=headers
            )
            scores = outputs[OUTPUT][0]
            return scores
        inputs = triton_inputs(self._grpc_input, user_row, history, candidates, live_version)
        result = await self._grpc.infer(
            self._target, inputs, model_version=model_version, headers=headers
        )
        scores = result.as_numpy(OUTPUT)[0]
        return scores
