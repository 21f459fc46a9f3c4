"""Triton Python-backend loader for ``model.pt`` (copied into each version directory).

Runs inside Triton's backend stub, not in our package: it imports only torch, numpy and
``triton_python_backend_utils``. It serves the ``model.pt`` beside it; every new version is a
new Triton model version, i.e. a new stub process (``bench ranking --serving versions``, the
way before the live model). The embedded Triton's live model, which serves every version in
place, is our C++ backend instead (``freshrank/embedded/live_backend.cc``).

Dynamic batching: ``execute`` gets every request of a batch; requests with the same input
shapes are concatenated and scored with ONE forward, then split again.
"""
# mypy: ignore-errors
# ruff: noqa

import gc
import os

import numpy as np
import torch

try:
    import triton_python_backend_utils as pb_utils
except ImportError:  # imported outside Triton (tests of the batching below)
    pb_utils = None

INPUTS = ("user_row", "history_rows", "candidate_rows")
OUTPUT = "scores"
DEVICE = os.environ.get("FRESHRANK_TRITON_DEVICE", "cpu")  # "cuda": models and inputs on the GPU


def group_requests(arrays):
    """Indices of requests that can share one forward: the same input shapes (batch aside).

    ``arrays``: per request ``(user_row, history_rows, candidate_rows)``."""
    groups = {}
    for index, tensors in enumerate(arrays):
        groups.setdefault(tuple(t.shape[1:] for t in tensors), []).append(index)
    return groups


def score_groups(model, arrays):
    """One forward per group; returns per request scores (numpy) or an error string."""
    results = [None] * len(arrays)
    for indices in group_requests(arrays).values():
        try:
            stacked = [
                torch.from_numpy(
                    arrays[indices[0]][n]  # alone (the usual case at low rates): no copy
                    if len(indices) == 1
                    else np.concatenate([arrays[i][n] for i in indices])
                ).to(DEVICE)
                for n in range(len(INPUTS))
            ]
            with torch.inference_mode():
                scores = model(*stacked).float().cpu().numpy()
        except Exception as exc:  # a bad request must not take the model down
            for index in indices:
                results[index] = str(exc)
            continue
        start = 0
        for index in indices:
            size = arrays[index][0].shape[0]
            results[index] = scores[start : start + size]
            start += size
    return results


def load_verified(path):
    """TorchScript from ``path``, run twice on a tiny input (verifies it answers, and warms
    up the profiling executor, whose first calls are slow) before it may serve."""
    model = torch.jit.load(path, map_location=DEVICE)
    model.eval()
    probe = (
        torch.zeros((1, 1), dtype=torch.int64, device=DEVICE),
        torch.zeros((1, 1), dtype=torch.int64, device=DEVICE),
        torch.zeros((1, 2), dtype=torch.int64, device=DEVICE),
    )
    with torch.inference_mode():
        for _ in range(2):
            scores = model(*probe)
    if tuple(scores.shape) != (1, 2):
        raise ValueError(f"{path}: scores of shape {tuple(scores.shape)} for 2 candidates")
    return model


def _request_arrays(request):
    return tuple(
        np.ascontiguousarray(pb_utils.get_input_tensor_by_name(request, name).as_numpy()).astype(
            np.int64, copy=False
        )
        for name in INPUTS
    )


class TritonPythonModel:
    def initialize(self, args):
        torch.set_num_threads(int(os.environ.get("FRESHRANK_TRITON_THREADS", "1")))
        here = os.path.dirname(os.path.abspath(__file__))
        self.model = load_verified(os.path.join(here, "model.pt"))
        # Everything alive now (torch, the model: ~10^5 objects) lives as long as the stub.
        # Frozen, the collector no longer walks it: a full collection took 70 ms here, a
        # stall that failed every request in flight at the 50 ms deadline.
        gc.collect()
        gc.freeze()

    def execute(self, requests):
        arrays, responses = [], [None] * len(requests)
        for index, request in enumerate(requests):
            try:
                arrays.append(_request_arrays(request))
            except Exception as exc:
                arrays.append(None)
                responses[index] = str(exc)
        valid = [i for i, a in enumerate(arrays) if a is not None]
        for index, result in zip(valid, score_groups(self.model, [arrays[i] for i in valid])):
            responses[index] = result
        return [
            pb_utils.InferenceResponse(error=pb_utils.TritonError(result))
            if isinstance(result, str)
            else pb_utils.InferenceResponse([pb_utils.Tensor(OUTPUT, result)])
            for result in responses
        ]
