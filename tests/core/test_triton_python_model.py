"""The Python-backend loader's batching, outside Triton: one forward per compatible group."""

from __future__ import annotations

import gc
import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import torch

from freshrank.core import model_repo
from freshrank.core import triton_python_model as loader  # outside Triton: no pb_utils
from freshrank.model import ModelConfig, build_model


class CountingModel(torch.nn.Module):
    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.batches: list[int] = []

    def forward(
        self, user: torch.Tensor, history: torch.Tensor, cand: torch.Tensor
    ) -> torch.Tensor:
        self.batches.append(int(user.shape[0]))
        scores: torch.Tensor = self.inner(user, history, cand)
        return scores


def _request(rng: np.random.Generator, version: int, history: int, candidates: int) -> tuple:  # type: ignore[type-arg]
    return version, (
        rng.integers(0, 10, (1, 1)),
        rng.integers(0, 20, (1, history)),
        rng.integers(0, 20, (1, candidates)),
    )


def test_requests_of_one_version_and_shape_share_one_forward() -> None:
    torch.manual_seed(0)
    inner = build_model(ModelConfig(architecture="din", num_users=10, num_items=20, dim=8)).eval()
    counting = {1: CountingModel(inner), 2: CountingModel(inner)}
    rng = np.random.default_rng(0)
    requests = [_request(rng, 1, 4, 7) for _ in range(5)]
    requests += [_request(rng, 1, 4, 3), _request(rng, 2, 4, 7), _request(rng, 3, 4, 7)]
    results = loader.score_groups(  # type: ignore[no-untyped-call]
        counting.get, requests
    )

    assert counting[1].batches == [5, 1]  # five alike in ONE forward, the odd shape alone
    assert counting[2].batches == [1]
    assert "not loaded in the live model" in results[-1]  # version 3 is not held
    with torch.inference_mode():
        for (_, arrays), scores in zip(requests[:-1], results[:-1], strict=True):
            expected = inner(*(torch.from_numpy(a) for a in arrays)).numpy()
            np.testing.assert_allclose(scores, expected, atol=1e-6)


def test_a_bad_group_fails_alone() -> None:
    inner = build_model(ModelConfig(architecture="mf", num_users=10, num_items=20, dim=8)).eval()
    rng = np.random.default_rng(1)
    good = _request(rng, 1, 2, 3)
    bad = (
        1,
        (np.array([[99]]), np.zeros((1, 2), dtype=np.int64), np.zeros((1, 5), dtype=np.int64)),
    )
    results = loader.score_groups(  # type: ignore[no-untyped-call]
        {1: inner}.get, [good, bad]
    )
    assert results[0].shape == (1, 3)
    assert isinstance(results[1], str)  # row 99 is out of range: an error for that group only


def _save(directory: Path, version: int, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = build_model(ModelConfig(architecture="mf", num_users=10, num_items=20, dim=4)).eval()
    (directory / str(version)).mkdir(parents=True)
    torch.jit.script(model).save(str(directory / str(version) / "model.pt"))  # type: ignore[no-untyped-call]
    return model


def _scores(model: torch.nn.Module) -> torch.Tensor:
    with torch.inference_mode():
        scores: torch.Tensor = model(
            torch.tensor([[3]]), torch.tensor([[1, 2]]), torch.tensor([[4, 5, 6]])
        )
    return scores


def test_live_models_add_versions_in_place_and_keep_the_newest(tmp_path: Path) -> None:
    eager = {1: _save(tmp_path, 1, seed=1)}
    live = loader.LiveModels(str(tmp_path), keep=2, log=lambda _: None)  # type: ignore[no-untyped-call]
    live.load_new()  # type: ignore[no-untyped-call]
    torch.testing.assert_close(_scores(live.get(1)), _scores(eager[1]))  # type: ignore[no-untyped-call]
    assert live.get(2) is None  # type: ignore[no-untyped-call]
    for version in (2, 3):
        eager[version] = _save(tmp_path, version, seed=version)
        live.load_new()  # type: ignore[no-untyped-call]
    assert sorted(live.models) == [2, 3]  # keep=2: the oldest went
    torch.testing.assert_close(_scores(live.get(0)), _scores(eager[3]))  # type: ignore[no-untyped-call]

    # A failed export's number written again: the new directory's model replaces the old one.
    shutil.rmtree(tmp_path / "3")
    eager[3] = _save(tmp_path, 3, seed=33)
    live.load_new()  # type: ignore[no-untyped-call]
    torch.testing.assert_close(_scores(live.get(3)), _scores(eager[3]))  # type: ignore[no-untyped-call]

    # A broken version is never served, and the served ones stay.
    (tmp_path / "4").mkdir()
    (tmp_path / "4" / "model.pt").write_bytes(b"half a model")
    live.load_new()  # type: ignore[no-untyped-call]
    assert sorted(live.models) == [2, 3]


def test_the_stub_leaves_its_startup_heap_out_of_garbage_collection(tmp_path: Path) -> None:
    # Torch alone is ~10^5 objects; a full collection walking them stalled the stub for 70 ms,
    # past the ranking service's deadline. The file runs as <version>/model.py beside model.pt.
    eager = _save(tmp_path, 1, seed=1)
    shutil.copy(loader.__file__, tmp_path / "1" / "model.py")
    spec = importlib.util.spec_from_file_location("stub_model", tmp_path / "1" / "model.py")
    assert spec is not None
    assert spec.loader is not None
    stub = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(stub)
    gc.unfreeze()
    try:
        model = stub.TritonPythonModel()
        model.initialize({"model_config": json.dumps({"name": "m"})})
        assert gc.get_freeze_count() > 10_000
    finally:
        gc.unfreeze()
    torch.testing.assert_close(_scores(model.model_of(1)), _scores(eager))  # it still serves


def test_the_backend_file_names_the_tensors_as_the_repository_does() -> None:
    # The file runs in Triton's stub, where freshrank is not importable: it keeps its own
    # copies of the tensor names, which must stay those of core.model_repo.
    assert loader.INPUTS == model_repo.INPUTS
    assert loader.VERSION_INPUT == model_repo.VERSION_INPUT
    assert loader.OUTPUT == model_repo.OUTPUT
