"""API contract: schemathesis against both services' own OpenAPI documents, live.

Each service runs as it is deployed (``freshrank feature`` / ``freshrank ranking``, real
SQLite store, real broker, the ranking service scoring a real exported model in-process and
reading the real feature service). Schemathesis generates requests from the served
``/openapi.json`` (valid and invalid ones, every phase but stateful) and checks every answer:
no 5xx, status codes, content types, headers (``Allow`` on 405) and bodies as documented,
schema-valid requests accepted and invalid ones rejected. Bounded and deterministic: at most
``MAX_EXAMPLES`` cases per operation from a fixed seed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from freshrank.core.kafka import EventProducer, ensure_topics
from freshrank.core.model_repo import ExportRecord, ModelRepository
from freshrank.embedded import EmbeddedBroker, ManagedProcess, free_port
from freshrank.embedded.process import http_ok
from freshrank.model import ModelConfig
from freshrank.model.learner import LearnerConfig, OnlineLearner
from freshrank.sim import SyntheticConfig, SyntheticStream

pytestmark = pytest.mark.integration
MAX_EXAMPLES = 100
SEED = 20261129
WORLD = SyntheticConfig(users=40, items=30, events=600, seed=4)


def _serve(role: str, tmp_path: Path, env: dict[str, str]) -> ManagedProcess:
    port = env["FRESHRANK_PORT"]
    process = ManagedProcess(
        role,
        [sys.executable, "-m", "freshrank.cli", role],
        log_path=tmp_path / f"{role}.log",
        env={**os.environ, "FRESHRANK_HOST": "127.0.0.1", "OMP_NUM_THREADS": "1", **env},
    )
    process.start()
    process.wait_ready(lambda: http_ok(f"http://127.0.0.1:{port}/healthz"), timeout=120)
    return process


def _export_small_model(repository: ModelRepository) -> None:
    learner = OnlineLearner(
        LearnerConfig(
            model=ModelConfig(architecture="mf", num_users=64, num_items=48, dim=8, history_len=4),
            device="cpu",
        )
    )
    events = list(SyntheticStream(WORLD).events())
    for start in range(0, len(events), 200):
        learner.step(events[start : start + 200])
    repository.write_version(
        learner.export,
        lambda version: ExportRecord(
            version=version,
            model=repository.export_manifest(version),
            events_covered=learner.events_trained,
            last_event_timestamp_ms=learner.last_event_timestamp_ms,
        ),
    )


def _until_popular(feature_url: str) -> None:
    """The feature service has ingested the stream (so answers carry real features)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{feature_url}/v1/items:popular?k=5", timeout=2) as r:
                if json.loads(r.read()).get("items"):
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise TimeoutError("feature service never ingested the stream")


@pytest.fixture(scope="module")
def services(
    broker: EmbeddedBroker, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, str]]:
    tmp_path = tmp_path_factory.mktemp("contract")
    name = f"contract{os.getpid()}"
    ensure_topics(broker.bootstrap, [f"{name}.events", f"{name}.events.dlq"])
    producer = EventProducer(broker.bootstrap, f"{name}.events")
    for event in SyntheticStream(WORLD).events():
        producer.send(event)
    producer.flush()
    _export_small_model(ModelRepository(tmp_path / "models", f"{name}-ranker"))
    ports = {"feature": free_port(), "ranking": free_port()}
    urls = {role: f"http://127.0.0.1:{port}" for role, port in ports.items()}
    common = {"FRESHRANK_NAME": name, "FRESHRANK_BOOTSTRAP_SERVERS": broker.bootstrap}
    feature = _serve(
        "feature",
        tmp_path,
        {
            **common,
            "FRESHRANK_PORT": str(ports["feature"]),
            "FRESHRANK_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'features.db'}",
        },
    )
    try:
        _until_popular(urls["feature"])
        ranking = _serve(
            "ranking",
            tmp_path,
            {
                **common,
                "FRESHRANK_PORT": str(ports["ranking"]),
                "FRESHRANK_SCORER": "torch",
                "FRESHRANK_FEATURE_URL": urls["feature"],
                "FRESHRANK_MODEL_REPOSITORY": str(tmp_path / "models"),
            },
        )
        try:
            yield urls
        finally:
            ranking.stop()
    finally:
        feature.stop()


def _schemathesis(base_url: str, report: Path) -> subprocess.CompletedProcess[str]:
    command = [
        str(Path(sys.executable).parent / "st"),
        "run",
        f"{base_url}/openapi.json",
        f"--url={base_url}",
        "--checks=all",
        "--exclude-checks=ignored_auth,use_after_free,ensure_resource_availability,"
        "object_level_authorization",
        "--phases=examples,coverage,fuzzing",
        f"--max-examples={MAX_EXAMPLES}",
        f"--seed={SEED}",
        "--workers=1",
        "--request-timeout=10",
        "--suppress-health-check=too_slow",
        "--generation-database=none",  # nothing written into the checkout
        "--report=ndjson",
        f"--report-dir={report}",
        "--output-truncate=false",
    ]
    report.mkdir(parents=True, exist_ok=True)
    return subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, "NO_COLOR": "1"},
        cwd=report,  # its cache (.schemathesis/) lands there, not in the checkout
    )


@pytest.mark.parametrize("role", ["feature", "ranking"])
def test_service_keeps_its_openapi_contract(
    services: dict[str, str], role: str, tmp_path: Path
) -> None:
    result = _schemathesis(services[role], tmp_path / "report")
    summary = result.stdout[-6000:]
    print(summary)
    assert result.returncode == 0, summary + result.stderr[-2000:]
    assert "No issues found" in result.stdout or "passed" in result.stdout, summary
