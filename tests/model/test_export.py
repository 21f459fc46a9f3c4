import json
from pathlib import Path

import pytest
import torch

from freshrank.core.model_repo import ExportRecord, ModelRepository
from freshrank.model import IdMap, ModelConfig, build_model
from freshrank.model.export import ExportMismatch, export_version, verify_scripted
from freshrank.model.learner import LearnerConfig, OnlineLearner, synthetic_batches

ARCHITECTURES = ["mf", "din", "sasrec"]


def _trained(architecture: str) -> OnlineLearner:
    config = LearnerConfig(
        model=ModelConfig(
            architecture=architecture, num_users=64, num_items=64, dim=8, history_len=5
        ),
        full_eval_events=4,
        negatives=10,
    )
    learner = OnlineLearner(config)
    for batch in synthetic_batches(64, users=50, items=50, events=640):
        learner.step(batch)
    return learner


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_export_reloads_to_the_same_scores_for_any_candidate_count(
    architecture: str, tmp_path: Path
) -> None:
    learner = _trained(architecture)
    learner.export(tmp_path)
    scripted = torch.jit.load(str(tmp_path / "model.pt"))
    ids = json.loads((tmp_path / "ids.json").read_text())
    assert ids["history_len"] == 5
    assert ids["architecture"] == architecture
    items = IdMap.from_json(ids["items"])
    assert items.rows(["i0", "i1"]).tolist() == learner.items.rows(["i0", "i1"]).tolist()
    generator = torch.Generator().manual_seed(3)
    for candidates in (1, 13, 64):
        user_row = torch.randint(0, 64, (3, 1), generator=generator)
        history_rows = torch.randint(0, 64, (3, 5), generator=generator)
        history_rows[0] = 0
        candidate_rows = torch.randint(0, 64, (3, candidates), generator=generator)
        with torch.inference_mode():
            expected = learner.model.eval()(user_row, history_rows, candidate_rows)
            actual = scripted(user_row, history_rows, candidate_rows)
        assert actual.shape == (3, candidates)
        assert actual.dtype == torch.float32
        torch.testing.assert_close(actual, expected, atol=1e-5, rtol=0)


def test_verification_refuses_a_model_that_does_not_match() -> None:
    config = ModelConfig(architecture="mf", num_users=8, num_items=8, dim=4, history_len=3)
    eager = build_model(config)
    other = build_model(config)
    with torch.no_grad():
        other.item_bias.weight.fill_(1.0)  # type: ignore[operator]
    with pytest.raises(ExportMismatch):
        verify_scripted(eager, torch.jit.script(other))


def test_export_populates_a_model_repository_version(tmp_path: Path) -> None:
    learner = _trained("din")
    repository = ModelRepository(tmp_path, "shop-ranker")
    record = repository.write_version(
        learner.export,
        lambda version: ExportRecord(
            version=version,
            architecture="din",
            events_covered=learner.events_trained,
            last_event_timestamp_ms=learner.last_event_timestamp_ms,
            metrics=learner.rolling,
        ),
    )
    version_dir = repository.version_dir(record.version)
    assert {p.name for p in version_dir.iterdir()} >= {"model.pt", "ids.json", "model.py"}
    assert record.events_covered == 640


def test_export_version_writes_ids_it_is_given(tmp_path: Path) -> None:
    config = ModelConfig(architecture="mf", num_users=8, num_items=8, dim=4, history_len=3)
    error = export_version(build_model(config), tmp_path, {"users": {}, "items": {}})
    assert error <= 1e-5
    assert json.loads((tmp_path / "ids.json").read_text()) == {"users": {}, "items": {}}
