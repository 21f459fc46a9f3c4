"""Ranking models and what trainer and serving must agree on (ID maps, model I/O).

Dense model code, sparse (embedding/ID) code and export are separate modules, TorchRec-style.
"""

from freshrank.model.base import ModelConfig, RankingModel
from freshrank.model.ids import PADDING_ROW, IdMap
from freshrank.model.registry import ARCHITECTURES, build_model

__all__ = ["ARCHITECTURES", "PADDING_ROW", "IdMap", "ModelConfig", "RankingModel", "build_model"]
