"""The ranking service with no Triton at all: in-process scoring, or a flagged fallback."""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from prometheus_client import CollectorRegistry
from ranking_support import TrainedModel, overlap

from freshrank.core.http import serve
from freshrank.core.model_repo import ModelRepository
from freshrank.embedded import ManagedProcess, free_port
from freshrank.ranking.service import create_ranking_app
from freshrank.ranking.settings import RankingSettings
from freshrank.sim import SyntheticStream

NAME = "solo"


async def _serve(settings: RankingSettings) -> AsyncIterator[tuple[str, CollectorRegistry]]:
    registry = CollectorRegistry()
    runner = await serve(
        await create_ranking_app(settings, registry=registry), "127.0.0.1", settings.port
    )
    try:
        yield f"http://127.0.0.1:{settings.port}", registry
    finally:
        await runner.cleanup()


def _settings(repository: Path, **overrides: object) -> RankingSettings:
    return RankingSettings(
        name=NAME,
        port=free_port(),
        triton_url=f"127.0.0.1:{free_port()}",  # nothing listens
        feature_url="",
        model_repository=str(repository),
        **overrides,  # type: ignore[arg-type]
    )


async def test_without_a_ready_model_it_answers_flagged_fallbacks(
    tmp_path: Path, trained: TrainedModel
) -> None:
    trained.write_version(ModelRepository(tmp_path, f"{NAME}-ranker"))
    async for url, registry in _serve(_settings(tmp_path)):
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{url}/v1/rank", json={"user_id": "u1", "k": 4}) as r:
                assert r.status == 200
                body = await r.json()
            async with session.get(f"{url}/readyz") as r:
                assert r.status == 200  # it always answers, so it is always ready
                assert (await r.json())["model_version"] == 0
        assert body["fallback"] is True
        assert body["model_version"] == "0"
        assert len(body["items"]) == 4  # the export's most recently trained items
        reason = {"reason": "no_ready_model"}
        assert registry.get_sample_value("freshrank_ranking_fallback_total", reason) == 1


async def test_torch_scorer_ranks_in_process_without_triton(
    tmp_path: Path, trained: TrainedModel
) -> None:
    trained.write_version(ModelRepository(tmp_path, f"{NAME}-ranker"))
    stream = SyntheticStream(trained.stream.config)
    async for url, _ in _serve(_settings(tmp_path, scorer="torch")):
        overlaps = []
        async with aiohttp.ClientSession() as session:
            for user in range(20):
                body = {"user_id": f"u{user}", "k": 10}
                async with session.post(f"{url}/v1/rank", json=body) as response:
                    reply = await response.json()
                assert reply["fallback"] is False
                assert reply["model_version"] == "1"
                ranked = [item["item_id"] for item in reply["items"]]
                overlaps.append(overlap(ranked, stream.top_items(user, 10, drifted=False)))
        assert sum(overlaps) / len(overlaps) > 0.3  # chance: 0.1


@pytest.mark.parametrize("k", [1, 7])
async def test_k_is_honoured(tmp_path: Path, trained: TrainedModel, k: int) -> None:
    trained.write_version(ModelRepository(tmp_path, f"{NAME}-ranker"))
    async for url, _ in _serve(_settings(tmp_path, scorer="torch")):
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"{url}/v1/rank", json={"user_id": "u1", "k": k}) as r,
        ):
            assert len((await r.json())["items"]) == k


def test_cli_serves_the_api_from_env_settings(tmp_path: Path, trained: TrainedModel) -> None:
    """``freshrank ranking`` as the local stack and the Dockerfile run it: settings from env."""
    trained.write_version(ModelRepository(tmp_path / "models", f"{NAME}-ranker"))
    port = free_port()
    env = {
        **os.environ,
        "FRESHRANK_NAME": NAME,
        "FRESHRANK_PORT": str(port),
        "FRESHRANK_HOST": "127.0.0.1",
        "FRESHRANK_SCORER": "torch",
        "FRESHRANK_FEATURE_URL": "",
        "FRESHRANK_MODEL_REPOSITORY": str(tmp_path / "models"),
    }
    url = f"http://127.0.0.1:{port}"
    process = ManagedProcess(
        "ranking",
        [sys.executable, "-m", "freshrank.cli", "ranking"],
        log_path=tmp_path / "ranking.log",
        env=env,
    )
    with process:
        process.wait_ready(lambda: _get(f"{url}/healthz") is not None, timeout=60)
        request = urllib.request.Request(
            f"{url}/v1/rank",
            data=json.dumps({"user_id": "u1", "k": 3}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            reply = json.loads(response.read())
        assert reply["fallback"] is False
        assert reply["model_version"] == "1"
        assert len(reply["items"]) == 3
        metrics = _get(f"{url}/metrics")
        assert metrics is not None
        assert "freshrank_http_request_duration_seconds_bucket" in metrics


def _get(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return str(response.read().decode())
    except (urllib.error.URLError, OSError):
        return None
