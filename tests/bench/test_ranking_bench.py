"""The ranking benchmark reads each answer's model version from the service's own JSON
encoding (a regex, not a parse, to keep the load generator cheap): the two must agree."""

from __future__ import annotations

from freshrank.bench.ranking import answered_version
from freshrank.core.protojson import to_json
from freshrank.v1 import ranking_pb2


def _reply(version: int, *, fallback: bool) -> bytes:
    response = ranking_pb2.RankResponse(model_version=version, fallback=fallback)
    response.items.add(item_id="i1", score=0.5)
    return to_json(response)


def test_a_model_answer_names_its_version() -> None:
    assert answered_version(_reply(12, fallback=False)) == 12


def test_a_fallback_counts_as_no_model() -> None:
    assert answered_version(_reply(12, fallback=True)) == 0
    assert answered_version(_reply(0, fallback=False)) == 0
    assert answered_version(b"") == 0
