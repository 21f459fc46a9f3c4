"""A small, untrained model published into a model repository: what tests that serve a
version (Triton, its clients) need, without training one."""

from __future__ import annotations

import torch

from freshrank.core.model_repo import ExportRecord, ModelRepository
from freshrank.model import IdMap, ModelConfig, build_model
from freshrank.model.export import export_version

USERS, ITEMS = 10, 20  # embedding rows, the padding row included


def publish_small_model(repo: ModelRepository, seed: int) -> tuple[ExportRecord, torch.nn.Module]:
    """The next version of ``repo``: an MF model drawn from ``seed``; its record and the model."""
    torch.manual_seed(seed)
    config = ModelConfig(architecture="mf", num_users=USERS, num_items=ITEMS, dim=8)
    model = build_model(config).eval()
    ids = {"users": IdMap(USERS).to_json(), "items": IdMap(ITEMS).to_json()}
    record = repo.write_version(
        lambda directory: export_version(model, directory, ids),
        lambda v: ExportRecord(
            version=v, model=repo.export_manifest(v), events_covered=0, last_event_timestamp_ms=0
        ),
    )
    return record, model
