"""The ranking service: ``POST /v1/rank`` in front of Triton, always answering.

Modules, one job each: ``settings`` (typed config), ``model_state`` (which version is READY and
its ID maps), ``features`` (user history from the feature service), ``triton`` (deadline-bound
inference), ``scorer`` (Triton or in-process TorchScript behind one interface), ``fallback``
(popularity ranking), ``candidates`` (retrieval when the caller sends none), ``ranker`` (the
request path), ``api`` (HTTP handlers + OpenAPI), ``service`` (wiring and lifecycle).
"""

from freshrank.ranking.settings import RankingSettings

__all__ = ["RankingSettings"]
