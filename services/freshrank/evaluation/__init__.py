"""Prequential evaluation of models and baselines on a time-ordered stream (`freshrank eval`)."""

from freshrank.evaluation.datasets import DATASETS, Dataset, load_dataset
from freshrank.evaluation.runner import MODELS, EvalSettings, RunResult, run_model

__all__ = [
    "DATASETS",
    "MODELS",
    "Dataset",
    "EvalSettings",
    "RunResult",
    "load_dataset",
    "run_model",
]
