"""Triton Python-backend loader for ``model.pt`` (copied next to the models it serves).

Runs inside Triton's backend stub, not in our package: it imports only torch, numpy and
``triton_python_backend_utils``. Two modes, chosen by the model config:

- **versioned** (a ``<version>/model.py`` of the ranker itself): serves the ``model.pt`` beside
  it; every new version is a new Triton model version, i.e. a new stub process.
- **live** (``parameters { key: "versions_dir" ... }``, the ``<name>-ranker-live`` model): one
  long-lived stub serves every version of the ranker. A background thread watches the versions
  directory, loads each new ``model.pt`` (TorchScript), runs it once on a tiny input (verified
  and warmed up) and only then adds it to the served set; the newest ``KEEP`` stay loaded, so
  callers still on the previous version keep being answered while they move on. A request
  names its version in the ``model_version`` input; a version not (yet) loaded is answered
  with an error containing ``NOT_LOADED`` (the caller's readiness probe). No process, no torch
  import per version.

Dynamic batching: ``execute`` gets every request of a batch; requests with the same version
and shapes are concatenated and scored with ONE forward, then split again.
"""
# mypy: ignore-errors
# ruff: noqa

import gc
import os
import threading
import time

import numpy as np
import torch

try:
    import triton_python_backend_utils as pb_utils
except ImportError:  # imported outside Triton (tests of the batching below)
    pb_utils = None

INPUTS = ("user_row", "history_rows", "candidate_rows")
VERSION_INPUT = "model_version"
OUTPUT = "scores"
NOT_LOADED = "is not loaded in the live model"
KEEP = int(os.environ.get("FRESHRANK_LIVE_KEEP", "3"))
DEVICE = os.environ.get("FRESHRANK_TRITON_DEVICE", "cpu")  # "cuda": models and inputs on the GPU
POLL_S = float(os.environ.get("FRESHRANK_LIVE_POLL_S", "0.05"))


def group_requests(arrays):
    """Indices of requests that can share one forward: same version and input shapes.

    ``arrays``: per request ``(version, (user_row, history_rows, candidate_rows))``."""
    groups = {}
    for index, (version, tensors) in enumerate(arrays):
        key = (version, tuple(t.shape[1:] for t in tensors))
        groups.setdefault(key, []).append(index)
    return groups


def score_groups(model_of, arrays):
    """One forward per group; returns per request scores (numpy) or an error string.

    ``model_of(version)``: the TorchScript module, or None when that version is not loaded."""
    results = [None] * len(arrays)
    for (version, _), indices in group_requests(arrays).items():
        model = model_of(version)
        if model is None:
            for index in indices:
                results[index] = f"model version {version} {NOT_LOADED}"
            continue
        try:
            stacked = [
                torch.from_numpy(
                    arrays[indices[0]][1][n]  # alone (the usual case at low rates): no copy
                    if len(indices) == 1
                    else np.concatenate([arrays[i][1][n] for i in indices])
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
            size = arrays[index][1][0].shape[0]
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


class LiveModels:
    """The loaded versions of one ranker and the thread that loads new ones."""

    def __init__(self, versions_dir, keep=KEEP, poll_s=POLL_S, log=print):
        self.versions_dir = versions_dir
        self.keep = max(1, keep)
        self.poll_s = poll_s
        self.log = log
        self.models = {}  # replaced, never mutated: readers need no lock
        self.identity = {}  # version -> identity of the directory it was loaded from
        self.failed = set()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="live-loader", daemon=True)

    def start(self):
        self.load_new()  # READY means: the newest version on disk is served
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=5)

    def get(self, version):
        if version <= 0:  # "any": the newest loaded
            with self._lock:
                newest = max(self.models, default=None)
                return None if newest is None else self.models[newest]
        model = self.models.get(version)
        if model is None:
            self._wake.set()  # asked for a version we lack: look now, not at the next poll
        return model

    def on_disk(self):
        """{version: identity of its directory} of the complete versions on disk.

        The identity (inode, times, size) tells a version number reused after a failed export
        (its directory removed, the number written again) from the one already loaded."""
        try:
            names = os.listdir(self.versions_dir)
        except OSError:
            return {}
        found = {}
        for name in names:
            if not name.isdigit():
                continue
            try:
                model = os.stat(os.path.join(self.versions_dir, name, "model.pt"))
                folder = os.stat(os.path.join(self.versions_dir, name))
            except OSError:  # pruned meanwhile, or not a model directory
                continue
            # An inode alone can be reused at once by a new directory; with the times, not.
            found[int(name)] = (folder.st_ino, folder.st_ctime_ns, model.st_mtime_ns, model.st_size)
        return found

    def load_new(self):
        """Load the versions on disk newer than the newest loaded (newest ``keep`` only),
        and reload a loaded version whose directory was replaced."""
        newest = max(self.models, default=0)
        disk = self.on_disk()
        wanted = [
            v for v in sorted(disk)
            if v > newest or (v in self.models and self.identity.get(v) != disk[v])
        ][-self.keep :]  # fmt: skip
        for version in wanted:
            if (version, disk[version]) in self.failed:
                continue
            path = os.path.join(self.versions_dir, str(version), "model.pt")
            started = time.perf_counter()
            try:
                model = load_verified(path)
            except Exception as exc:  # pruned meanwhile, or broken: never served
                self.failed.add((version, disk[version]))
                self.log(f"live model: version {version} not loaded: {exc}")
                continue
            with self._lock:
                self.identity[version] = disk[version]
                models = {**self.models, version: model}
                self.models = {v: models[v] for v in sorted(models)[-self.keep :]}
            self.log(
                f"live model: serving version {version} "
                f"(loaded in {time.perf_counter() - started:.2f}s)"
            )

    def _run(self):
        while not self._stop.is_set():
            self._wake.wait(self.poll_s)
            self._wake.clear()
            try:
                self.load_new()
            except Exception as exc:  # keep watching
                self.log(f"live model: scan failed: {exc}")


def _request_arrays(request, live):
    tensors = tuple(
        np.ascontiguousarray(pb_utils.get_input_tensor_by_name(request, name).as_numpy()).astype(
            np.int64, copy=False
        )
        for name in INPUTS
    )
    version = 0
    if live:
        given = pb_utils.get_input_tensor_by_name(request, VERSION_INPUT)
        if given is not None:
            version = int(given.as_numpy().reshape(-1)[0])
    return version, tensors


class TritonPythonModel:
    def initialize(self, args):
        import json

        torch.set_num_threads(int(os.environ.get("FRESHRANK_TRITON_THREADS", "1")))
        config = json.loads(args["model_config"])
        versions_dir = config.get("parameters", {}).get("versions_dir", {}).get("string_value")
        if versions_dir:
            base = args["model_repository"]  # this model's directory
            path = os.path.normpath(os.path.join(base, versions_dir))
            self.live = LiveModels(path, log=pb_utils.Logger.log_info).start()
            self.model_of = self.live.get
        else:
            here = os.path.dirname(os.path.abspath(__file__))
            self.live = None
            model = load_verified(os.path.join(here, "model.pt"))
            self.model_of = lambda version: model
        # Everything alive now (torch, the loaded models: ~10^5 objects) lives as long as the
        # stub. Frozen, the collector no longer walks it: a full collection took 70 ms here,
        # a stall that failed every request in flight at the 50 ms deadline.
        gc.collect()
        gc.freeze()

    def execute(self, requests):
        arrays, responses = [], [None] * len(requests)
        for index, request in enumerate(requests):
            try:
                arrays.append(_request_arrays(request, self.live is not None))
            except Exception as exc:
                arrays.append(None)
                responses[index] = str(exc)
        valid = [i for i, a in enumerate(arrays) if a is not None]
        for index, result in zip(valid, score_groups(self.model_of, [arrays[i] for i in valid])):
            responses[index] = result
        return [
            pb_utils.InferenceResponse(error=pb_utils.TritonError(result))
            if isinstance(result, str)
            else pb_utils.InferenceResponse([pb_utils.Tensor(OUTPUT, result)])
            for result in responses
        ]

    def finalize(self):
        if self.live is not None:
            self.live.stop()
