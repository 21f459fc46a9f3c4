"""Start, watch and stop the whole local stack; nothing survives it (see ManagedProcess).

Supervised as Kubernetes would run it: a crashed Triton or service is reaped and restarted
(same ports and settings) with exponential backoff (``Supervisor``). The broker is not: its
memory storage would come back empty, behind every checkpointed offset; its death ends the
stream, as losing a Kafka cluster's disks would.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import secrets
import shutil
import sys
from pathlib import Path

from freshrank.core.kafka import ensure_topics
from freshrank.embedded import (
    EmbeddedBroker,
    EmbeddedTriton,
    ManagedProcess,
    Supervisor,
    free_port,
)
from freshrank.embedded.process import StartStop, http_ok

__all__ = ["SERVICE_ROLES", "LocalStack", "StackConfig"]

log = logging.getLogger(__name__)
SERVICE_ROLES = ("feature", "trainer", "ranking")
# What the services derive from the stream. The embedded broker keeps nothing across restarts
# (memory storage), so none of this may outlive a stack: checkpointed offsets would point past
# the end of the new, empty topic (the trainer would wait forever), and the feature store
# would skip replayed events as already seen.
STREAM_STATE = ("models", "checkpoints", "features.db", "features.db-wal", "features.db-shm")


@dataclasses.dataclass(frozen=True, kw_only=True)
class StackConfig:
    workdir: Path = Path(".freshrank/stack")
    name: str = "freshrank"
    services: tuple[str, ...] = SERVICE_ROLES
    architecture: str = "sasrec"
    export_interval_s: float = 5.0
    # CPU budget on a small machine: the trainer yields the cores to serving when both want
    # them (ranking latency is what callers wait on; training catches up between bursts).
    trainer_nice: int = 10
    extra_env: dict[str, str] = dataclasses.field(default_factory=dict)


class LocalStack(StartStop):
    def __init__(self, config: StackConfig) -> None:
        self.config = config
        self.workdir = config.workdir.resolve()
        self.model_repository = self.workdir / "models"
        self.broker = EmbeddedBroker(self.workdir)
        # As in a cluster: Triton's model control answers the trainer only (core.triton_auth).
        self.triton = EmbeddedTriton(
            self.workdir, self.model_repository, admin_key=secrets.token_urlsafe(24)
        )
        self.ports = {"feature": free_port(), "trainer": free_port(), "ranking": free_port()}
        self.services: dict[str, ManagedProcess] = {}
        self.supervisor = Supervisor()

    def url(self, role: str) -> str:
        return f"http://127.0.0.1:{self.ports[role]}"

    def urls(self) -> dict[str, str]:
        urls = {
            "kafka": self.broker.bootstrap,
            "triton-http": f"http://{self.triton.http_url}",
            "triton-grpc": self.triton.grpc_url,
        }
        urls.update({role: self.url(role) for role in self.services})
        return urls

    def service_env(self, role: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "FRESHRANK_NAME": self.config.name,
                "FRESHRANK_BOOTSTRAP_SERVERS": self.broker.bootstrap,
                "FRESHRANK_HOST": "127.0.0.1",
                "FRESHRANK_PORT": str(self.ports[role]),
                "FRESHRANK_MODEL_REPOSITORY": str(self.model_repository),
                "FRESHRANK_TRITON_URL": self.triton.http_url,
                # One long-lived Python-backend model serves every version in place.
                "FRESHRANK_TRITON_LIVE": "true",
                "FRESHRANK_MODEL_POLL_S": "0.25",  # a probe of the live model is cheap
                "FRESHRANK_FEATURE_URL": self.url("feature"),
                "FRESHRANK_DATABASE_URL": f"sqlite+aiosqlite:///{self.workdir / 'features.db'}",
                "FRESHRANK_CHECKPOINT_DIR": str(self.workdir / "checkpoints"),
                "FRESHRANK_ARCHITECTURE": self.config.architecture,
                "FRESHRANK_EXPORT_INTERVAL_S": str(self.config.export_interval_s),
                "OMP_NUM_THREADS": env.get("OMP_NUM_THREADS", "1"),
            }
        )
        if role == "trainer":
            env["FRESHRANK_TRITON_ADMIN_KEY"] = self.triton.admin_key
        env.update(self.config.extra_env)
        return env

    def start(self) -> LocalStack:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._clear_stream_state()
        try:
            self.broker.start()
            ensure_topics(
                self.broker.bootstrap,
                [f"{self.config.name}.events", f"{self.config.name}.events.dlq"],
            )
            self.triton.start()
            for role in self.config.services:
                self._start_service(role)
            for process in (self.triton.process, *self.services.values()):
                self.supervisor.watch(process)
            self.supervisor.start()
            self._write_state()
        except BaseException:
            self.stop()
            raise
        return self

    def _clear_stream_state(self) -> None:
        for name in STREAM_STATE:
            path = self.workdir / name
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)

    def _start_service(self, role: str) -> None:
        nice = ["nice", "-n", str(self.config.trainer_nice)] if role == "trainer" else []
        process = ManagedProcess(
            role,
            [*nice, sys.executable, "-m", "freshrank.cli", role],
            log_path=self.workdir / "logs" / f"{role}.log",
            env=self.service_env(role),
        )
        process.start()
        self.services[role] = process
        process.wait_ready(lambda: http_ok(f"{self.url(role)}/healthz"), timeout=120)

    def _write_state(self) -> None:
        state = {"pid": os.getpid(), "urls": self.urls()}
        (self.workdir / "stack.json").write_text(json.dumps(state, indent=2))

    def stop(self) -> None:
        self.supervisor.stop()  # first: a stopped process must not be restarted
        for role in reversed(list(self.services)):
            self.services[role].stop()
        self.services.clear()
        self.triton.stop()
        self.broker.stop()
        (self.workdir / "stack.json").unlink(missing_ok=True)
