"""Read the running stack: Prometheus text from the services, the export manifest."""

from __future__ import annotations

import dataclasses
import urllib.error
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from freshrank.core.contracts import routes
from freshrank.core.model_repo import ExportRecord, ModelRepository

__all__ = ["Snapshot", "scrape"]


def scrape(url: str, timeout: float = 1.0) -> dict[str, float]:
    """Every sample of a /metrics page: {'name' or 'name{label="value",...}': value}."""
    try:
        with urllib.request.urlopen(f"{url}{routes.METRICS}", timeout=timeout) as response:
            text = response.read().decode()
    except (urllib.error.URLError, OSError):
        return {}
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            values[f"{sample.name}{{{labels}}}" if labels else sample.name] = float(sample.value)
    return values


@dataclasses.dataclass
class Snapshot:
    """One look at the stack, taken by the live view every second."""

    seconds: float
    trainer: dict[str, float]
    exports: list[ExportRecord]

    @classmethod
    def take(cls, seconds: float, trainer_url: str, repo_root: Path, model: str) -> Snapshot:
        return cls(seconds, scrape(trainer_url), ModelRepository(repo_root, model).manifest())
