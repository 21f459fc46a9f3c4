import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import tritonclient.http as httpclient

from freshrank.core.contracts.manifest import ExportManifest
from freshrank.core.id_table import ID_TABLES_DIR, IdTable
from freshrank.core.model_repo import ExportRecord, ModelRepository
from freshrank.embedded import EmbeddedTriton
from freshrank.model import ARCHITECTURES as ARCHITECTURE_REGISTRY
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
    manifest = ExportManifest.read(tmp_path)
    assert (manifest.history_len, manifest.architecture) == (5, architecture)
    assert set(ids) == {"users", "items"}  # history length and architecture: the manifest's
    items = IdMap.from_json(ids["items"])
    assert items.rows(["i0", "i1"]).tolist() == learner.items.rows(["i0", "i1"]).tolist()
    table = IdTable.load(tmp_path / ID_TABLES_DIR, "items")
    probe = ["i0", "i1", "i7", "never-seen"]
    assert table.rows(probe).tolist() == learner.items.rows(probe).tolist()
    assert manifest.items == len(learner.items) == len(table)
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
            model=repository.export_manifest(version),
            events_covered=learner.events_trained,
            last_event_timestamp_ms=learner.last_event_timestamp_ms,
            metrics=learner.rolling,
        ),
    )
    version_dir = repository.version_dir(record.version)
    assert {p.name for p in version_dir.iterdir()} >= {
        "model.pt", "export.json", "ids", "ids.json", "model.py"
    }  # fmt: skip
    assert record.model == repository.export_manifest(record.version)
    assert repository.manifest()[-1] == record  # typed round trip through manifest.json
    assert record.events_covered == 640


def test_export_version_writes_ids_it_is_given(tmp_path: Path) -> None:
    config = ModelConfig(architecture="mf", num_users=8, num_items=8, dim=4, history_len=3)
    error = export_version(build_model(config), tmp_path, {"users": {}, "items": {}})
    assert error <= 1e-5
    assert json.loads((tmp_path / "ids.json").read_text()) == {"users": {}, "items": {}}


# Production Triton serves model.pt with the libtorch backend: C++, no Python, none of our
# classes. This interpreter stands in for it: our packages cannot even be imported there.
_LIBTORCH_STAND_IN = """
import sys
sys.modules["freshrank"] = None
sys.modules["freshrank_operator"] = None
import numpy as np, torch
model = torch.jit.load(sys.argv[1], map_location="cpu")
inputs = np.load(sys.argv[2])
with torch.inference_mode():
    scores = model(*(torch.from_numpy(inputs[name]) for name in inputs.files))
np.save(sys.argv[3], scores.numpy())
"""


@pytest.mark.integration
def test_each_export_scores_the_same_under_libtorch_as_on_the_python_backend(
    triton: EmbeddedTriton, model_repository: Path, tmp_path: Path
) -> None:
    client = httpclient.InferenceServerClient(triton.http_url)
    generator = np.random.default_rng(5)
    for architecture in sorted(ARCHITECTURE_REGISTRY):
        learner = _trained(architecture)
        repository = ModelRepository(model_repository, f"{architecture}-ranker")
        record = repository.write_version(
            learner.export,
            lambda version, repo=repository: ExportRecord(
                version=version,
                model=repo.export_manifest(version),
                events_covered=0,
                last_event_timestamp_ms=0,
            ),
        )
        inputs = {
            "user_row": generator.integers(0, 64, (3, 1)),
            "history_rows": generator.integers(0, 64, (3, 5)),
            "candidate_rows": generator.integers(0, 64, (3, 17)),
        }
        inputs["history_rows"][0] = 0  # a cold user
        client.load_model(repository.model_name)
        served = client.infer(
            repository.model_name, _triton_inputs(inputs), model_version=str(record.version)
        ).as_numpy("scores")

        model_file = repository.version_dir(record.version) / "model.pt"
        inputs_file, scores_file = tmp_path / "inputs.npz", tmp_path / "scores.npy"
        stand_in = [sys.executable, "-c", _LIBTORCH_STAND_IN, model_file, inputs_file, scores_file]
        np.savez(inputs_file, **inputs)
        subprocess.run(stand_in, check=True, timeout=120)
        libtorch = np.load(scores_file)
        assert served is not None
        assert libtorch.shape == served.shape == (3, 17), architecture
        np.testing.assert_allclose(libtorch, served, atol=1e-5, err_msg=architecture)


def _triton_inputs(arrays: dict[str, np.ndarray]) -> list[httpclient.InferInput]:
    tensors = []
    for name, array in arrays.items():
        tensor = httpclient.InferInput(name, list(array.shape), "INT64")
        tensor.set_data_from_numpy(array.astype(np.int64))
        tensors.append(tensor)
    return tensors
