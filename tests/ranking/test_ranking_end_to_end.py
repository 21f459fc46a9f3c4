"""The whole path, every part real: stream -> broker -> trainer (train, export, Triton load) and
feature service -> ranking API, which then serves the user's planted taste.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from prometheus_client import CollectorRegistry
from ranking_support import WORLD, overlap

from freshrank.core.http import serve
from freshrank.core.kafka import EventProducer, ensure_topics
from freshrank.core.model_repo import ModelRepository
from freshrank.embedded import EmbeddedBroker, EmbeddedTriton, free_port
from freshrank.feature.service import FeatureService
from freshrank.feature.settings import FeatureSettings
from freshrank.ranking.service import create_ranking_app
from freshrank.ranking.settings import RankingSettings
from freshrank.sim import SyntheticStream
from freshrank.trainer.service import run_service as run_trainer
from freshrank.trainer.settings import TrainerSettings

pytestmark = pytest.mark.integration
# Fewer events than the other ranking tests' world: the trainer's prequential pass, the feature
# ingest and the ranking all share this machine's two cores.
E2E_WORLD = dataclasses.replace(WORLD, events=8000)


def _produce_stream(bootstrap: str, topic: str, stream: SyntheticStream) -> int:
    ensure_topics(bootstrap, [topic])
    producer = EventProducer(bootstrap, topic)
    count = 0
    for event in stream.events():
        producer.send(event)
        count += 1
    producer.flush()
    return count


async def _features(broker: EmbeddedBroker, name: str, tmp_path: Path) -> FeatureService:
    service = FeatureService(
        FeatureSettings(
            name=name,
            bootstrap_servers=broker.bootstrap,
            database_url=f"sqlite+aiosqlite:///{tmp_path / 'features.db'}",
            host="127.0.0.1",
            port=free_port(),
        )
    )
    await service.start()
    return service


def _trainer_settings(
    broker: EmbeddedBroker, name: str, tmp_path: Path, triton: EmbeddedTriton
) -> TrainerSettings:
    return TrainerSettings(
        name=name,
        bootstrap_servers=broker.bootstrap,
        host="127.0.0.1",
        port=free_port(),
        model_repository=str(triton.model_repository),
        checkpoint_dir=str(tmp_path / "checkpoints"),
        triton_url=triton.http_url,
        architecture="mf",
        dim=16,
        history_len=8,
        num_users=WORLD.users + 56,
        num_items=WORLD.items + 28,
        device="cpu",
        batch_size=256,
        export_interval_s=2.0,
        min_events=1000,
        max_regression=1.0,  # this test is about serving, not the gate
    )


async def _ranking(name: str, triton: EmbeddedTriton, feature_port: int) -> AsyncIterator[str]:
    settings = RankingSettings(
        name=name,
        port=free_port(),
        triton_url=triton.http_url,
        feature_url=f"http://127.0.0.1:{feature_port}",
        model_repository=str(triton.model_repository),
        model_poll_s=0.2,
        triton_deadline_ms=2000.0,
        feature_deadline_ms=1000.0,
    )
    app = await create_ranking_app(settings, registry=CollectorRegistry())
    runner = await serve(app, "127.0.0.1", settings.port)
    try:
        yield f"http://127.0.0.1:{settings.port}"
    finally:
        await runner.cleanup()


async def test_stream_to_trainer_to_triton_to_ranking_serves_planted_taste(
    broker: EmbeddedBroker, triton: EmbeddedTriton, unique_name: str, tmp_path: Path
) -> None:
    stream = SyntheticStream(E2E_WORLD)
    settings = _trainer_settings(broker, unique_name, tmp_path, triton)
    total = await asyncio.to_thread(
        _produce_stream, broker.bootstrap, settings.events_topic, stream
    )
    repository = ModelRepository(triton.model_repository, settings.triton_model)
    features = await _features(broker, unique_name, tmp_path)
    stop = asyncio.Event()
    trainer = asyncio.create_task(run_trainer(settings, stop, handle_signals=False))
    try:
        covering = await _export_covering(repository, total, trainer)
        async for url in _ranking(unique_name, triton, features.settings.port):
            async with aiohttp.ClientSession() as session:
                overlaps = []
                for user in range(30):
                    body = {"user_id": f"u{user}", "k": 10}
                    async with session.post(f"{url}/v1/rank", json=body) as response:
                        assert response.status == 200
                        reply = await response.json()
                    assert reply["fallback"] is False
                    assert int(reply["model_version"]) >= covering
                    ranked = [item["item_id"] for item in reply["items"]]
                    overlaps.append(overlap(ranked, stream.top_items(user, 10, drifted=False)))
        assert sum(overlaps) / len(overlaps) > 3 * 10 / WORLD.items, overlaps
    finally:
        stop.set()
        await asyncio.wait_for(trainer, 60)
        await features.stop()


async def _export_covering(
    repository: ModelRepository, events: int, trainer: asyncio.Task[None]
) -> int:
    """The first exported version that covers all ``events`` (the trainer loads it into Triton)."""
    for _ in range(900):
        if trainer.done():
            trainer.result()  # surface the trainer's error
            raise AssertionError("trainer stopped")
        for record in repository.manifest():
            if record.events_covered >= events:
                return record.version
        await asyncio.sleep(0.2)
    raise AssertionError(f"no export covered {events} events: {repository.manifest()}")
