"""Version swaps on the live model, through the ranking service, on a real tritonserver: the
previous version answers until the new one does, so publishing versions under load costs no
fallback, and ranking moves on to each new version."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import aiohttp
import pytest
from prometheus_client import CollectorRegistry
from ranking_support import TrainedModel

from freshrank.core.http import serve
from freshrank.core.model_repo import ModelRepository
from freshrank.embedded import EmbeddedTriton, free_port
from freshrank.ranking.service import create_ranking_app
from freshrank.ranking.settings import RankingSettings
from freshrank.trainer.exporter import LiveTritonControl

pytestmark = pytest.mark.integration
VERSIONS = 4


async def test_publishing_versions_under_load_costs_no_fallback(
    triton: EmbeddedTriton, model_repository: Path, trained: TrainedModel
) -> None:
    name = f"sw{uuid.uuid4().hex[:6]}"
    repository = ModelRepository(model_repository, f"{name}-ranker")
    control = LiveTritonControl(triton.http_url)
    trained.write_version(repository)
    await control.load_and_wait(repository.model_name, 1, timeout_s=120.0)
    settings = RankingSettings(
        name=name,
        port=free_port(),
        triton_url=triton.http_url,
        triton_live=True,
        feature_url="",
        model_repository=str(model_repository),
        model_poll_s=0.1,
        # Generous: the machine is 2 shared cores; this test is about the hand-over between
        # versions, not about a deadline (the benchmark measures latency).
        triton_deadline_ms=1000.0,
    )
    registry = CollectorRegistry()
    runner = await serve(
        await create_ranking_app(settings, registry=registry), "127.0.0.1", settings.port
    )
    answers: list[tuple[bool, int, int]] = []  # (fallback, version, worker) as answered
    stop = asyncio.Event()
    body = {"user_id": "u3", "k": 5, "candidates": [f"i{i}" for i in range(40)]}

    async def load(session: aiohttp.ClientSession, worker: int) -> None:
        while not stop.is_set():
            async with session.post(f"http://127.0.0.1:{settings.port}/v1/rank", json=body) as r:
                assert r.status == 200
                reply = await r.json()
            answers.append(
                (reply["fallback"], int(reply["model_version"]), worker)
            )  # int64: a string

    async def served(version: int, timeout: float = 60.0) -> None:
        async with asyncio.timeout(timeout):
            while not any(v == version for _, v, _ in answers):  # noqa: ASYNC110
                await asyncio.sleep(0.05)

    try:
        async with aiohttp.ClientSession() as session:
            workers = [asyncio.create_task(load(session, w)) for w in range(3)]
            await served(1)
            for version in range(2, VERSIONS + 1):
                await asyncio.to_thread(trained.write_version, repository)
                await control.wait_ready(repository.model_name, version, timeout_s=120.0)
                await served(version)
            stop.set()
            await asyncio.gather(*workers)
    finally:
        await control.close()
        await runner.cleanup()
    first = next(i for i, (fallback, _, _) in enumerate(answers) if not fallback)
    after = answers[first:]
    fallbacks = [a for a in after if a[0]]
    assert fallbacks == [], f"{len(fallbacks)} fallbacks of {len(after)} answers"
    assert {v for _, v, _ in after} == set(range(1, VERSIONS + 1))
    for worker in range(3):  # each caller only ever moves on to newer versions
        seen = [v for _, v, w in after if w == worker]
        assert seen == sorted(seen)
