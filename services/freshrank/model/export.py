"""TorchScript export for Triton: script, save, reload, and prove the reload scores the same.

``export_version(model, directory, ids)`` is the ``populate`` callback body for
``ModelRepository.write_version``: it writes ``model.pt``, the version's ``ExportManifest``
(``export.json``: architecture, history length, sizes; the one place serving reads them), the
compact ID tables ranking memory-maps (``ids/``, ``core.id_table``) and ``ids.json`` (the same
maps as JSON, for tools and people; serving never parses it). The verification
runs the eager model and the reloaded TorchScript on random inputs of the Triton I/O shapes
(several candidate counts, since C varies per request) and refuses to publish on mismatch.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from freshrank.core.contracts.manifest import ExportManifest
from freshrank.core.id_table import ID_TABLES_DIR, IdTable
from freshrank.core.model_repo import IDS_FILE, MODEL_FILE
from freshrank.model.base import RankingModel

__all__ = [
    "ExportMismatch",
    "export_version",
    "script_model",
    "verify_scripted",
    "write_id_tables",
]

_VERIFY_CANDIDATES = (1, 7, 100)
_VERIFY_BATCH = 4


class ExportMismatch(RuntimeError):
    """The reloaded TorchScript does not reproduce the eager model: nothing is published."""


def script_model(model: RankingModel) -> torch.jit.ScriptModule:
    """A CPU, float32, eval-mode scripted copy (the training model is left untouched)."""
    serving = copy.deepcopy(model).to("cpu", torch.float32).eval()
    for module in serving.modules():
        if isinstance(module, nn.Embedding):
            module.sparse = False  # a training-time flag; serving does plain lookups
    scripted: torch.jit.ScriptModule = torch.jit.script(serving)
    return scripted


def verify_scripted(
    eager: RankingModel, scripted: torch.jit.ScriptModule, *, atol: float = 1e-5, seed: int = 0
) -> float:
    """Max |eager - scripted| over random Triton-shaped inputs; raises ``ExportMismatch``."""
    reference = copy.deepcopy(eager).to("cpu", torch.float32).eval()
    config = eager.config
    generator = torch.Generator().manual_seed(seed)
    worst = 0.0
    with torch.inference_mode():
        for candidates in _VERIFY_CANDIDATES:
            inputs = _random_inputs(
                generator, config.num_users, config.num_items, config.history_len, candidates
            )
            expected = reference(*inputs)
            actual = scripted(*inputs)
            if actual.shape != expected.shape or actual.dtype != torch.float32:
                raise ExportMismatch(
                    f"scripted output {tuple(actual.shape)}/{actual.dtype}, "
                    f"expected {tuple(expected.shape)}/float32"
                )
            worst = max(worst, float((actual - expected).abs().max()))
    if worst > atol:
        raise ExportMismatch(f"scripted model differs from eager by {worst:.3g} > {atol}")
    return worst


def export_version(
    model: RankingModel, directory: Path, ids: dict[str, Any], *, atol: float = 1e-5
) -> float:
    """Write ``model.pt`` (verified after reloading), ``export.json``, the ID tables and
    ``ids.json``; returns the max error. ``ids``: ``{"users": IdMap.to_json(), "items": ...}``.
    """
    path = directory / MODEL_FILE
    torch.jit.save(script_model(model), str(path))
    reloaded = torch.jit.load(str(path), map_location="cpu")  # type: ignore[no-untyped-call]
    error = verify_scripted(model, reloaded, atol=atol)
    users, items = write_id_tables(directory, ids)
    config = model.config
    ExportManifest(
        architecture=config.architecture,
        history_len=config.history_len,
        dim=config.dim,
        num_users=config.num_users,
        num_items=config.num_items,
        users=users,
        items=items,
    ).write(directory)
    (directory / IDS_FILE).write_text(json.dumps(ids))
    return error


def write_id_tables(directory: Path, ids: dict[str, Any]) -> tuple[int, int]:
    """The compact ``ids/`` tables of both maps; returns (users, items) active IDs."""
    counts = []
    for name in ("users", "items"):
        id_table = IdTable.from_id_map_json(ids.get(name) or {})
        id_table.save(directory / ID_TABLES_DIR, name)
        counts.append(len(id_table))
    return counts[0], counts[1]


def _random_inputs(
    generator: torch.Generator, users: int, items: int, history: int, candidates: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    user_row = torch.randint(0, users, (_VERIFY_BATCH, 1), generator=generator)
    history_rows = torch.randint(0, items, (_VERIFY_BATCH, history), generator=generator)
    history_rows[0, history // 2 :] = 0  # a short history, padded like serving pads it
    history_rows[1] = 0  # a cold user: no history at all
    candidate_rows = torch.randint(0, items, (_VERIFY_BATCH, candidates), generator=generator)
    return user_row, history_rows, candidate_rows
