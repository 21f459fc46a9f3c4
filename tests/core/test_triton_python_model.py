"""The Python-backend loader (``--serving versions``) outside Triton: one forward per
compatible group, and a stub heap the collector leaves alone."""

from __future__ import annotations

import gc
import importlib.util
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


def _request(rng: np.random.Generator, history: int, candidates: int) -> tuple:  # type: ignore[type-arg]
    return (
        rng.integers(0, 10, (1, 1)),
        rng.integers(0, 20, (1, history)),
        rng.integers(0, 20, (1, candidates)),
    )


def test_requests_of_one_shape_share_one_forward() -> None:
    torch.manual_seed(0)
    inner = build_model(ModelConfig(architecture="din", num_users=10, num_items=20, dim=8)).eval()
    counting = CountingModel(inner)
    rng = np.random.default_rng(0)
    requests = [_request(rng, 4, 7) for _ in range(5)] + [_request(rng, 4, 3)]
    results = loader.score_groups(counting, requests)  # type: ignore[no-untyped-call]

    assert counting.batches == [5, 1]  # five alike in ONE forward, the odd shape alone
    with torch.inference_mode():
        for arrays, scores in zip(requests, results, strict=True):
            expected = inner(*(torch.from_numpy(a) for a in arrays)).numpy()
            np.testing.assert_allclose(scores, expected, atol=1e-6)


def test_a_bad_group_fails_alone() -> None:
    inner = build_model(ModelConfig(architecture="mf", num_users=10, num_items=20, dim=8)).eval()
    rng = np.random.default_rng(1)
    good = _request(rng, 2, 3)
    bad = (np.array([[99]]), np.zeros((1, 2), dtype=np.int64), np.zeros((1, 5), dtype=np.int64))
    results = loader.score_groups(inner, [good, bad])  # type: ignore[no-untyped-call]
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
        model.initialize({})
        assert gc.get_freeze_count() > 10_000
    finally:
        gc.unfreeze()
    torch.testing.assert_close(_scores(model.model), _scores(eager))  # it still serves


def test_the_backend_file_names_the_tensors_as_the_repository_does() -> None:
    # The file runs in Triton's stub, where freshrank is not importable: it keeps its own
    # copies of the tensor names, which must stay those of core.model_repo.
    assert loader.INPUTS == model_repo.INPUTS
    assert loader.OUTPUT == model_repo.OUTPUT
