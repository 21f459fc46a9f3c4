"""Helpers of the ranking tests: a model trained by the online learner, exported like the
trainer exports it, and an OTLP receiver for Triton's own spans."""

from __future__ import annotations

import dataclasses
import http.server
import json
import threading
from pathlib import Path

import torch

from freshrank.core.model_repo import ExportRecord, ModelRepository
from freshrank.model import IdMap, ModelConfig
from freshrank.model.learner import LearnerConfig, OnlineLearner
from freshrank.sim import SyntheticConfig, SyntheticStream

HISTORY_LEN = 8
WORLD = SyntheticConfig(users=200, items=100, topics=10, events=20_000, drift_at=None, seed=11)


@dataclasses.dataclass
class TrainedModel:
    """An ``OnlineLearner`` trained on the planted stream, and a TorchScript snapshot of it."""

    stream: SyntheticStream
    learner: OnlineLearner
    model: torch.jit.ScriptModule  # the exported model.pt, reloaded
    users: IdMap
    items: IdMap

    def write_version(self, repository: ModelRepository) -> ExportRecord:
        """What the trainer does on export: ``learner.export`` into a new repository version."""
        return repository.write_version(
            self.learner.export,
            lambda version: ExportRecord(
                version=version,
                model=repository.export_manifest(version),
                events_covered=self.learner.events_trained,
                last_event_timestamp_ms=self.learner.last_event_timestamp_ms,
            ),
        )


def train_learner(stream: SyntheticStream, snapshot: Path, *, batch: int = 256) -> TrainedModel:
    """The model helper's online learner, prequential step by step over the whole stream."""
    config = stream.config
    learner = OnlineLearner(
        LearnerConfig(
            model=ModelConfig(
                architecture="mf",
                num_users=config.users + 56,
                num_items=config.items + 28,
                dim=16,
                history_len=HISTORY_LEN,
            ),
            negatives=20,
            full_eval_events=0,  # the full-catalogue metric is not what this fixture is for
            device="cpu",
        )
    )
    events = list(stream.events())
    for start in range(0, len(events), batch):
        learner.step(events[start : start + batch])
    learner.export(snapshot)
    ids = json.loads((snapshot / "ids.json").read_text())
    model = torch.jit.load(str(snapshot / "model.pt"))  # type: ignore[no-untyped-call]
    return TrainedModel(
        stream, learner, model, IdMap.from_json(ids["users"]), IdMap.from_json(ids["items"])
    )


class OtlpJsonReceiver:
    """An OTLP/HTTP JSON endpoint (what Triton's OpenTelemetry tracer exports to), in a thread.

    Collects (trace_id, parent_span_id, name) of every span Triton reports.
    """

    def __init__(self) -> None:
        self.spans: list[tuple[str, str, str]] = []
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                for resource in body.get("resourceSpans", []):
                    for scope in resource.get("scopeSpans", []):
                        for span in scope.get("spans", []):
                            receiver.spans.append(
                                (span["traceId"], span.get("parentSpanId", ""), span["name"])
                            )
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args: object) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"127.0.0.1:{self._server.server_address[1]}/v1/traces"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def triton_args(self) -> list[str]:
        return [
            *("--trace-config", "mode=opentelemetry"),
            *("--trace-config", "rate=1"),
            *("--trace-config", "level=TIMESTAMPS"),
            *("--trace-config", f"opentelemetry,url={self.url}"),
            *("--trace-config", "opentelemetry,bsp_max_export_batch_size=1"),
        ]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def overlap(a: list[str], b: list[str]) -> float:
    return len(set(a) & set(b)) / max(1, len(b))


__all__ = ["HISTORY_LEN", "WORLD", "OtlpJsonReceiver", "TrainedModel", "overlap", "train_learner"]
