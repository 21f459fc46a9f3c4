"""Real tritonserver loading TorchScript versions our repository writer produced."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from model_versions import publish_small_model

from freshrank.core.model_repo import ExportRecord, ModelRepository
from freshrank.embedded import EmbeddedTriton

pytestmark = pytest.mark.integration
MODEL = "t-ranker"


def _inputs(module: object, candidates: np.ndarray) -> list:  # type: ignore[type-arg]
    arrays = {
        "user_row": np.array([[3]], dtype=np.int64),
        "history_rows": np.array([[1, 2, 0, 0]], dtype=np.int64),
        "candidate_rows": candidates,
    }
    out = []
    for name, array in arrays.items():
        tensor = module.InferInput(name, list(array.shape), "INT64")  # type: ignore[attr-defined]
        tensor.set_data_from_numpy(array)
        out.append(tensor)
    return out


def _expected(model: torch.nn.Module, candidates: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(
            torch.tensor([[3]]), torch.tensor([[1, 2, 0, 0]]), torch.from_numpy(candidates)
        ).numpy()


def test_serves_versions_over_http_and_grpc(triton: EmbeddedTriton, model_repository: Path) -> None:
    repo = ModelRepository(model_repository, MODEL)
    first, model_v1 = publish_small_model(repo, seed=1)
    assert first.version == 1
    assert (repo.model_dir / "config.pbtxt").read_text().count('platform: "pytorch_libtorch"') == 1
    http = httpclient.InferenceServerClient(triton.http_url)
    grpc = grpcclient.InferenceServerClient(triton.grpc_url)
    http.load_model(MODEL)
    candidates = np.arange(1, 20, dtype=np.int64).reshape(1, 19)

    result = http.infer(MODEL, _inputs(httpclient, candidates), model_version="1")
    np.testing.assert_allclose(
        result.as_numpy("scores"), _expected(model_v1, candidates), atol=1e-5
    )
    result = grpc.infer(MODEL, _inputs(grpcclient, candidates), model_version="1")
    np.testing.assert_allclose(
        result.as_numpy("scores"), _expected(model_v1, candidates), atol=1e-5
    )

    second, model_v2 = publish_small_model(repo, seed=2)
    assert second.version == 2
    http.load_model(MODEL)
    assert http.is_model_ready(MODEL, "2")
    result = http.infer(MODEL, _inputs(httpclient, candidates))  # latest version
    np.testing.assert_allclose(
        result.as_numpy("scores"), _expected(model_v2, candidates), atol=1e-5
    )
    assert [r.version for r in repo.manifest()] == [1, 2]


def test_partial_version_is_never_visible(model_repository: Path) -> None:
    repo = ModelRepository(model_repository, MODEL)

    def crash(directory: Path) -> None:
        (directory / "model.pt").write_bytes(b"half a model")
        raise RuntimeError("exporter died mid-write")

    with pytest.raises(RuntimeError):
        repo.write_version(
            crash,
            lambda v: ExportRecord(
                version=v,
                model=repo.export_manifest(v),
                events_covered=0,
                last_event_timestamp_ms=0,
            ),
        )
    assert repo.versions() == []
    assert [p.name for p in repo.model_dir.iterdir() if p.name.startswith(".tmp")] == []


async def test_model_control_answers_only_the_key_holder(
    tmp_path: Path, model_repository: Path
) -> None:
    """One unauthenticated request must not unload the served model; the trainer's loads work."""
    import tritonclient.utils

    from freshrank.core.triton_auth import ADMIN_KEY_HEADER
    from freshrank.trainer.exporter import TritonControl

    repo = ModelRepository(model_repository, MODEL)
    publish_small_model(repo, seed=1)
    with EmbeddedTriton(tmp_path, model_repository, admin_key="k3y-for-tests") as triton:
        trainer = TritonControl(triton.http_url, admin_key="k3y-for-tests")
        try:
            await trainer.load_and_wait(MODEL, 1, timeout_s=120.0)
        finally:
            await trainer.close()
        http = httpclient.InferenceServerClient(triton.http_url)
        grpc = grpcclient.InferenceServerClient(triton.grpc_url)
        for unload in (http.unload_model, grpc.unload_model):
            with pytest.raises(tritonclient.utils.InferenceServerException) as refused:
                unload(MODEL)
            assert ADMIN_KEY_HEADER in str(refused.value)
        with pytest.raises(tritonclient.utils.InferenceServerException):
            http.unload_model(MODEL, headers={ADMIN_KEY_HEADER: "guessed"})
        with pytest.raises(tritonclient.utils.InferenceServerException):
            http.load_model(MODEL)  # a load without the key is refused too
        # Still served, and inference, health and metadata need no key (ranking, probes).
        assert http.is_model_ready(MODEL, "1")
        assert http.is_server_live()
        candidates = np.arange(1, 20, dtype=np.int64).reshape(1, 19)
        result = http.infer(MODEL, _inputs(httpclient, candidates), model_version="1")
        assert result.as_numpy("scores").shape == (1, 19)
        assert http.get_model_metadata(MODEL)["name"] == MODEL
