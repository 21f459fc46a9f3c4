"""The live model on a real tritonserver (our C++ backend, ``embedded/live_backend.cc``):
tritonserver itself serves every version in place, without a stub process, the previous
version answers until callers move on, a broken version is never served, and concurrent
requests are batched into one forward."""

from __future__ import annotations

import concurrent.futures
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import tritonclient.http as httpclient
from model_versions import publish_small_model
from tritonclient.utils import InferenceServerException

from freshrank.core.model_repo import (
    ModelRepository,
    live_model_name,
    triton_inputs,
)
from freshrank.embedded import EmbeddedTriton

pytestmark = pytest.mark.integration
MODEL = "live-ranker"
LIVE = live_model_name(MODEL)
CANDIDATES = np.arange(1, 20, dtype=np.int64).reshape(1, 19)
HISTORY = np.array([[1, 2, 0, 0]], dtype=np.int64)


def _publish(repo: ModelRepository, seed: int) -> torch.nn.Module:
    return publish_small_model(repo, seed)[1]


def _inputs(version: int, user: int = 3) -> list[httpclient.InferInput]:
    return triton_inputs(httpclient.InferInput, user, HISTORY, CANDIDATES, version)


def _expected(model: torch.nn.Module, user: int = 3) -> np.ndarray:  # type: ignore[type-arg]
    with torch.no_grad():
        scores: np.ndarray = model(  # type: ignore[type-arg]
            torch.tensor([[user]]), torch.from_numpy(HISTORY), torch.from_numpy(CANDIDATES)
        ).numpy()
    return scores


def _wait_answers(client: httpclient.InferenceServerClient, version: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            client.infer(LIVE, _inputs(version))
            return
        except InferenceServerException as exc:
            if time.monotonic() > deadline:
                raise TimeoutError(f"version {version} never answered: {exc}") from exc
        time.sleep(0.02)


def _stub_pids(triton: EmbeddedTriton) -> set[int]:
    """Python-backend stub processes descending from this tritonserver."""
    parents: dict[int, int] = {}
    names: dict[int, str] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # exited meanwhile
            continue
        pid = int(text.split(" ", 1)[0])
        names[pid] = text[text.index("(") + 1 : text.rindex(")")]
        parents[pid] = int(text[text.rindex(")") + 2 :].split()[1])
    root = triton.process.pid

    def descends(pid: int) -> bool:
        while pid > 1:
            if pid == root:
                return True
            pid = parents.get(pid, 0)
        return False

    # comm is cut at 15 characters: "triton_python_b(ackend_stub)"
    return {p for p, n in names.items() if n.startswith("triton_python") and descends(p)}


def test_new_versions_swap_in_place_without_a_failed_request(
    triton: EmbeddedTriton, model_repository: Path
) -> None:
    repo = ModelRepository(model_repository, MODEL)
    models = {1: _publish(repo, seed=1)}
    client = httpclient.InferenceServerClient(triton.http_url, concurrency=4)
    client.load_model(LIVE)
    assert client.is_model_ready(LIVE)
    np.testing.assert_allclose(
        client.infer(LIVE, _inputs(1)).as_numpy("scores"), _expected(models[1]), atol=1e-5
    )
    assert _stub_pids(triton) == set()  # scored inside tritonserver: no stub process

    # Load on version 1 while versions 2 and 3 are published: every request must be answered.
    stop, failures, answered = threading.Event(), [], [0]

    def hammer() -> None:
        own = httpclient.InferenceServerClient(triton.http_url)
        while not stop.is_set():
            try:
                own.infer(LIVE, _inputs(1))
                answered[0] += 1
            except InferenceServerException as exc:
                failures.append(str(exc))

    worker = threading.Thread(target=hammer)
    worker.start()
    try:
        for version in (2, 3):
            models[version] = _publish(repo, seed=version)
            _wait_answers(client, version, timeout=60)
    finally:
        stop.set()
        worker.join()
    assert failures == []
    assert answered[0] > 0
    for version, model in models.items():  # each version scores with its own weights
        served = client.infer(LIVE, _inputs(version)).as_numpy("scores")
        np.testing.assert_allclose(served, _expected(model), atol=1e-5)
    assert _stub_pids(triton) == set()  # no process per version either

    # Older than the newest KEEP (3) versions: dropped, with an answer that says so.
    models[4] = _publish(repo, seed=4)
    _wait_answers(client, 4, timeout=60)
    with pytest.raises(InferenceServerException, match="not loaded in the live model"):
        client.infer(LIVE, _inputs(1))
    with pytest.raises(InferenceServerException, match="not loaded in the live model"):
        client.infer(LIVE, _inputs(99))


def test_concurrent_requests_are_scored_in_batches(
    triton: EmbeddedTriton, model_repository: Path
) -> None:
    repo = ModelRepository(model_repository, MODEL)
    model = _publish(repo, seed=1)
    client = httpclient.InferenceServerClient(triton.http_url)
    client.load_model(LIVE)
    requests = 64

    def one(user: int) -> np.ndarray:  # type: ignore[type-arg]
        own = httpclient.InferenceServerClient(triton.http_url)
        scores: np.ndarray = own.infer(LIVE, _inputs(1, user)).as_numpy("scores")  # type: ignore[type-arg]
        return scores

    users = [u % 10 for u in range(requests)]
    # Batching takes requests that queued while the model ran (no added queue delay), so a
    # burst on a busy machine may find the model idle each time: burst until one is batched.
    deadline = time.monotonic() + 120
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        while True:
            for user, scores in zip(users, pool.map(one, users), strict=True):
                np.testing.assert_allclose(scores, _expected(model, user), atol=1e-5)
            stats = client.get_inference_statistics(LIVE)["model_stats"][0]
            # Triton counts one execution per batch handed to ``execute`` (one forward each).
            if stats["execution_count"] < stats["inference_count"] or time.monotonic() > deadline:
                break
    assert stats["inference_count"] >= requests
    assert stats["execution_count"] < stats["inference_count"]


def test_a_replaced_version_is_reloaded_and_a_broken_one_never_served(
    triton: EmbeddedTriton, model_repository: Path
) -> None:
    repo = ModelRepository(model_repository, MODEL)
    _publish(repo, seed=1)
    client = httpclient.InferenceServerClient(triton.http_url)
    client.load_model(LIVE)
    models = {2: _publish(repo, seed=2)}
    _wait_answers(client, 2, timeout=60)

    # A failed export's number written again: the new directory's model replaces the old one.
    shutil.rmtree(repo.version_dir(2))
    models[2] = _publish(repo, seed=22)
    deadline = time.monotonic() + 60
    while True:
        served = client.infer(LIVE, _inputs(2)).as_numpy("scores")
        if np.allclose(served, _expected(models[2]), atol=1e-5):
            break
        assert time.monotonic() < deadline, "the replaced version 2 was never reloaded"
        time.sleep(0.05)

    # A version that does not load is never served; the served ones stay.
    broken = repo.version_dir(3)
    broken.mkdir()
    (broken / "model.pt").write_bytes(b"half a model")
    deadline = time.monotonic() + 60
    while "live model: version 3 not loaded" not in triton.process.log_path.read_text():
        # Asking for a version it lacks makes the loader look at once.
        with pytest.raises(InferenceServerException, match="not loaded in the live model"):
            client.infer(LIVE, _inputs(3))
        assert time.monotonic() < deadline, "the loader never tried version 3"
        time.sleep(0.05)
    with pytest.raises(InferenceServerException, match="not loaded in the live model"):
        client.infer(LIVE, _inputs(3))
    np.testing.assert_allclose(
        client.infer(LIVE, _inputs(2)).as_numpy("scores"), _expected(models[2]), atol=1e-5
    )


def test_a_live_model_without_its_versions_directory_fails_to_load_saying_so(
    triton: EmbeddedTriton, model_repository: Path
) -> None:
    repo = ModelRepository(model_repository, MODEL)
    _publish(repo, seed=1)  # writes the live model's config, which names the directory
    config = repo.live_dir / "config.pbtxt"
    config.write_text(
        "\n".join(line for line in config.read_text().splitlines() if "versions_dir" not in line)
    )
    client = httpclient.InferenceServerClient(triton.http_url)
    with pytest.raises(InferenceServerException, match="parameter versions_dir is required"):
        client.load_model(LIVE)
