"""Row-wise Adagrad for embedding tables with sparse gradients.

The optimizer FBGEMM and TorchRec use for recommendation tables (and Monolith for its
online training): one accumulator per row, ``sum += mean(g_row ** 2)``, and the row moves
by ``lr * g_row / sqrt(sum)``. Only rows present in the batch's gradient change, in value
and in state: a row's step size depends on that row's own history alone. ``SparseAdam``
also touches only the batch's rows, but its bias correction counts the *global* step, so a
rare item's first gradients are scaled as if its moments had been warming up all along,
and its step size does not shrink as it accumulates evidence. Measured on Amazon Beauty
(~16 events per item): ``sasrec`` HR@10 0.450 -> 0.462 (docs/quality-log.md).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch

__all__ = ["RowWiseAdagrad"]


class RowWiseAdagrad(torch.optim.Optimizer):
    """Adagrad with one accumulator per row of each (sparse-gradient) table."""

    def __init__(self, params: Iterable[Any], lr: float = 0.03, eps: float = 1e-8) -> None:
        if lr <= 0 or eps <= 0:
            raise ValueError("lr and eps must be > 0")
        super().__init__(params, {"lr": lr, "eps": eps})

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is not None:
                    self._update(param, param.grad, group["lr"], group["eps"])
        return loss

    def _update(self, param: torch.Tensor, grad: torch.Tensor, lr: float, eps: float) -> None:
        if not grad.is_sparse:
            raise ValueError("RowWiseAdagrad takes sparse gradients (nn.Embedding(sparse=True))")
        grad = grad.coalesce()
        rows, values = grad.indices()[0], grad.values()
        state = self.state[param]
        if "sum" not in state:
            state["sum"] = torch.zeros(param.shape[0], dtype=param.dtype, device=param.device)
        accumulated: torch.Tensor = state["sum"]
        squares = values.pow(2).reshape(len(rows), -1).mean(dim=1)
        accumulated.index_add_(0, rows, squares.to(accumulated.dtype))
        step = lr / (accumulated[rows].sqrt() + eps)
        shape = [-1] + [1] * (values.dim() - 1)
        param.index_add_(0, rows, (-values * step.view(shape)).to(param.dtype))
