"""The ranking service's parts on their own: top-k, breaker, fallback, retrieval, ID state."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import pytest
from ranking_support import HISTORY_LEN, TrainedModel

from freshrank.core.model_repo import ModelRepository
from freshrank.ranking.api import BadRequest, RankLimits, openapi, parse_json_query
from freshrank.ranking.candidates import Retrieval
from freshrank.ranking.fallback import PopularityFallback, top_k
from freshrank.ranking.model_state import (
    ModelState,
    ModelWatcher,
    load_model_state,
)
from freshrank.ranking.ranker import Ranker
from freshrank.ranking.settings import RankingSettings
from freshrank.ranking.triton import CircuitBreaker
from freshrank.v1 import ranking_pb2

LIMITS = RankLimits(default_k=10, max_k=100, max_candidates=5)


@pytest.fixture
def state(tmp_path: Path, trained: TrainedModel) -> ModelState:
    repository = ModelRepository(tmp_path, "m-ranker")
    record = trained.write_version(repository)
    return load_model_state(repository, record.version)


def test_top_k_is_best_first_with_stable_ties() -> None:
    scores = np.array([0.1, 0.9, 0.5, 0.9, -1.0], dtype=np.float32)
    assert top_k(scores, 3).tolist() == [1, 3, 2]
    assert top_k(scores, 10).tolist() == [1, 3, 2, 0, 4]
    assert top_k(scores, 0).tolist() == []


def test_breaker_opens_after_consecutive_failures_and_half_opens() -> None:
    now = [0.0]
    breaker = CircuitBreaker(3, 1.0, clock=lambda: now[0], min_failing_s=0.0)
    breaker.failure()
    breaker.failure()
    breaker.success()  # a success resets the count
    breaker.failure()
    breaker.failure()
    assert not breaker.is_open
    breaker.failure()
    assert breaker.is_open
    now[0] = 1.5
    assert not breaker.is_open  # half-open: let a request through
    breaker.failure()
    assert breaker.is_open  # one more failure re-opens at once


def test_one_slow_moment_does_not_open_the_breaker_a_down_triton_does() -> None:
    now = [10.0]
    breaker = CircuitBreaker(3, 1.0, clock=lambda: now[0], min_failing_s=0.25)
    for _ in range(10):  # a stall: every request in flight misses its deadline at once
        now[0] += 0.005
        breaker.failure()
    assert not breaker.is_open
    breaker.success()
    for _ in range(10):  # failing for longer than the span: Triton is down
        now[0] += 0.05
        breaker.failure()
    assert breaker.is_open


def test_state_maps_ids_exactly_as_the_trainer_did(
    state: ModelState, trained: TrainedModel
) -> None:
    ids = ["i3", "i42", "unknown-item"]
    assert state.items.rows(ids).tolist() == [*trained.items.rows(ids[:2]).tolist(), 0]
    assert state.users.row("u7") == trained.users.row("u7")
    assert state.users.row("new-user") == 0  # cold start
    assert state.item_rows(ids).tolist() == state.items.rows(ids).tolist()
    assert state.user_row("u7") == trained.users.row("u7")
    assert "new-user" not in state.users
    assert "u7" in state.users
    assert state.history_len == HISTORY_LEN  # the export manifest's, the only source
    assert state.manifest.architecture == "mf"
    assert sorted(state.known_items.tolist()) == sorted(trained.items.known_ids())
    assert state.items.rows(state.known_items.tolist()).tolist() == state.known_rows.tolist()


def test_history_rows_are_most_recent_first_and_padded(state: ModelState) -> None:
    rows = Ranker._history_rows(state, ["i5", "nope", "i9"])
    assert rows.tolist() == [state.items.row("i5"), 0, state.items.row("i9")] + [0] * (
        HISTORY_LEN - 3
    )
    long = Ranker._history_rows(state, [f"i{i}" for i in range(50)])
    assert long.shape == (HISTORY_LEN,)


def test_fallback_ranks_by_popularity_then_by_recency(state: ModelState) -> None:
    fallback = PopularityFallback()
    items, scores = fallback.rank(None, 3, state)  # nothing popular yet: the model's recent items
    assert list(items) == state.known_items[:3].tolist()
    assert list(scores) == sorted(scores, reverse=True)
    assert fallback.rank(None, 3, None) == ([], [])
    fallback.update([("i1", 1.0), ("i2", 5.0), ("i3", 3.0)])
    assert list(fallback.rank(None, 2, state)[0]) == ["i2", "i3"]
    items, scores = fallback.rank(["x", "i1", "i3"], 2, state)
    assert list(items) == ["i3", "i1"]
    assert list(scores) == [3.0, 1.0]


def test_retrieval_puts_popular_known_items_first_and_caps(state: ModelState) -> None:
    fallback = PopularityFallback()
    fallback.update([("not-in-model", 9.0), ("i7", 2.0), ("i4", 1.0)])
    retrieval = Retrieval(fallback, size=20)
    ids, rows = retrieval.candidates(state)
    assert ids[:2].tolist() == ["i7", "i4"]
    assert len(ids) == 20
    assert len(set(ids.tolist())) == 20
    assert rows.tolist() == state.items.rows(ids.tolist()).tolist()
    assert retrieval.candidates(state)[0] is ids  # cached until model or popularity changes
    fallback.update([("i9", 1.0)])
    assert retrieval.candidates(state)[0][0] == "i9"


def test_query_parsing_defaults_and_dedupes() -> None:
    query = parse_json_query(
        json.dumps({"user_id": "u1", "candidates": ["a", "b", "a"]}).encode(), LIMITS
    )
    assert query.k == 10
    assert query.candidates == ["a", "b"]
    assert (
        parse_json_query(
            json.dumps({"user_id": "u1", "candidates": []}).encode(), LIMITS
        ).candidates
        is None
    )
    with pytest.raises(BadRequest, match="at most 5 candidates"):
        parse_json_query(
            json.dumps({"user_id": "u", "candidates": list("abcdef")}).encode(), LIMITS
        )
    with pytest.raises(BadRequest, match="non-empty strings"):
        parse_json_query(json.dumps({"user_id": "u", "candidates": ["a", ""]}).encode(), LIMITS)
    with pytest.raises(BadRequest, match="k must be an integer"):
        parse_json_query(json.dumps({"user_id": "u", "k": True}).encode(), LIMITS)


def test_settings_reject_unknown_protocol_and_scorer() -> None:
    with pytest.raises(ValueError, match="triton_protocol"):
        RankingSettings(triton_protocol="carrier-pigeon")
    with pytest.raises(ValueError, match="scorer"):
        RankingSettings(scorer="abacus")
    assert RankingSettings().port == 8080


async def test_requests_on_a_dropped_version_share_one_catch_up(
    tmp_path: Path, trained: TrainedModel
) -> None:
    repository = ModelRepository(tmp_path, "m-ranker")
    trained.write_version(repository)
    served = {1}  # what Triton reports READY; the probe is the boundary to Triton
    probes: list[int] = []

    async def is_ready(version: int) -> bool:
        probes.append(version)
        await asyncio.sleep(0.01)  # a real probe takes a round trip: callers overlap
        return version in served

    watcher = ModelWatcher(repository, is_ready, poll_s=3600.0)
    assert (await watcher.refresh()).version == 1  # type: ignore[union-attr]
    trained.write_version(repository)
    served = {2}  # Triton swapped: version 1 is gone
    probes.clear()
    states = await asyncio.gather(*(watcher.catch_up(1) for _ in range(20)))
    assert {s.version for s in states if s is not None} == {2}
    assert probes == [2]  # one refresh for all twenty callers
    assert await watcher.catch_up(1) is watcher.serving  # already moved on: no probe
    assert probes == [2]


async def test_a_failed_probe_keeps_the_served_version_until_failures_repeat(
    tmp_path: Path, trained: TrainedModel
) -> None:
    repository = ModelRepository(tmp_path, "m-ranker")
    trained.write_version(repository)
    probe_fails = False

    async def is_ready(version: int) -> bool:
        if probe_fails:  # a timed-out probe on a busy machine, or Triton gone
            raise TimeoutError("probe timed out")
        return True

    watcher = ModelWatcher(repository, is_ready, poll_s=3600.0)
    assert (await watcher.refresh()).version == 1  # type: ignore[union-attr]
    probe_fails = True
    assert (await watcher.refresh()).version == 1  # type: ignore[union-attr]
    assert (await watcher.refresh()).version == 1  # type: ignore[union-attr]
    assert await watcher.refresh() is None  # the third failure in a row: Triton counts as down
    assert watcher.serving is None
    probe_fails = False
    assert (await watcher.refresh()).version == 1  # type: ignore[union-attr]


def test_openapi_is_generated_from_ranking_proto() -> None:
    schemas = openapi(LIMITS)["components"]["schemas"]
    for name in ("RankRequest", "RankResponse", "ScoredItem"):
        fields = getattr(ranking_pb2, name).DESCRIPTOR.fields_by_name
        assert list(schemas[name]["properties"]) == list(fields)
    request = schemas["RankRequest"]
    assert request["required"] == ["user_id"]
    assert request["additionalProperties"] is False
    assert request["properties"]["k"]["maximum"] == LIMITS.max_k
    assert request["properties"]["candidates"]["maxItems"] == LIMITS.max_candidates
    assert schemas["RankResponse"]["properties"]["model_version"]["type"] == "string"  # int64


async def test_a_failed_probe_of_the_replacing_version_does_not_drop_serving(
    tmp_path: Path, trained: TrainedModel
) -> None:
    repository = ModelRepository(tmp_path, "m-ranker")
    trained.write_version(repository)
    answers: dict[int, bool | None] = {1: True}

    async def is_ready(version: int) -> bool:
        answer = answers.get(version, False)
        if answer is None:  # a timed-out probe on a busy machine
            raise TimeoutError("probe timed out")
        return answer

    watcher = ModelWatcher(repository, is_ready, poll_s=3600.0)
    assert (await watcher.refresh()).version == 1  # type: ignore[union-attr]
    trained.write_version(repository)
    answers = {1: False, 2: None}  # Triton swapped to 2, but the probe of 2 timed out
    assert (await watcher.refresh()).version == 1  # type: ignore[union-attr]
    answers = {1: False, 2: True}
    assert (await watcher.refresh()).version == 2  # type: ignore[union-attr]
