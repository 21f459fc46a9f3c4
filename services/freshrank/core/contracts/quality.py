"""Prequential quality metrics: the names the learner reports, the trainer's quality gate
watches (``--quality-metric``) and the CRD offers (``spec.trainer.qualityGate.metric``; a test
checks that the CRD's enum is exactly this one)."""

from __future__ import annotations

from enum import StrEnum

__all__ = ["LOSS", "ROLLING_NAMES", "QualityMetric"]


class QualityMetric(StrEnum):
    """HR@10 / NDCG@10 of the true item among sampled candidates, and (``_full``) against the
    whole catalogue for a seeded subset of each batch."""

    HR_AT_10 = "hr@10"
    NDCG_AT_10 = "ndcg@10"
    HR_AT_10_FULL = "hr@10_full"
    NDCG_AT_10_FULL = "ndcg@10_full"

    @property
    def step_field(self) -> str:
        """The learner's per-batch ``StepMetrics`` field (``ndcg@10`` -> ``ndcg10``)."""
        return self.value.replace("@", "")


LOSS = "loss"
# Keys of the learner's rolling metrics (and labels of the trainer's prequential gauge).
ROLLING_NAMES: tuple[str, ...] = (*QualityMetric, LOSS)
