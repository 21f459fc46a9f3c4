"""The one interface the ranker scores through, and its in-process TorchScript implementation.

``TritonScorer`` (production) and ``TorchScorer`` (the same ``model.pt`` loaded into this
process: small deployments without Triton, and the benchmark's peer) are interchangeable.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Protocol

import numpy as np
import torch

from freshrank.core.model_repo import MODEL_FILE, ModelRepository
from freshrank.ranking.triton import Rows, Scores, ScoringUnavailable

__all__ = ["Scorer", "TorchScorer"]


class Scorer(Protocol):
    name: str

    async def is_ready(self, version: int) -> bool: ...

    async def score(
        self, version: int, user_row: int, history: Rows, candidates: Rows
    ) -> Scores: ...

    async def close(self) -> None: ...


class TorchScorer:
    """Scores with TorchScript in this process, on the event loop (sub-millisecond models)."""

    name = "torch"

    def __init__(
        self, repository: ModelRepository, *, threads: int = 1, device: str = "cpu"
    ) -> None:
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(f"device {device!r}: this torch build sees no CUDA device")
        self.repository = repository
        self.device = torch.device(device)
        self._models: dict[int, torch.jit.ScriptModule] = {}
        self._lock = threading.Lock()
        torch.set_num_threads(threads)

    async def is_ready(self, version: int) -> bool:
        if version not in self._models:
            path = self.repository.version_dir(version) / MODEL_FILE
            if not path.is_file():
                return False
            await asyncio.to_thread(self._load, version)
        return True

    def _load(self, version: int) -> None:
        model = torch.jit.load(  # type: ignore[no-untyped-call]
            str(self.repository.version_dir(version) / MODEL_FILE), self.device
        )
        model.eval()
        with self._lock:
            self._models[version] = model
            for old in sorted(self._models)[:-2]:
                del self._models[old]

    async def score(self, version: int, user_row: int, history: Rows, candidates: Rows) -> Scores:
        model = self._models.get(version)
        if model is None:
            raise ScoringUnavailable("model_not_loaded", f"version {version}")
        with torch.inference_mode():
            scores = model(
                torch.tensor([[user_row]], dtype=torch.int64, device=self.device),
                torch.from_numpy(history).reshape(1, -1).to(self.device),
                torch.from_numpy(candidates).reshape(1, -1).to(self.device),
            )
        out: Scores = scores[0].float().cpu().numpy().astype(np.float32, copy=False)
        return out

    async def close(self) -> None:
        self._models.clear()
