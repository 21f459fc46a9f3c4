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
from typing import Any

from freshrank.core.contracts import routes
from freshrank.core.kafka import ensure_topics
from freshrank.core.service_settings import FeatureSettings, RankingSettings, TrainerSettings
from freshrank.core.settings import Settings, settings_env
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
ROLE_SETTINGS: dict[str, type[Settings]] = {
    "feature": FeatureSettings,
    "trainer": TrainerSettings,
    "ranking": RankingSettings,
}
SERVICE_ROLES = tuple(ROLE_SETTINGS)
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
    # More settings by field name (num_users=128 ...), for each role that has them.
    extra_settings: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        known = set().union(*(cls.model_fields for cls in ROLE_SETTINGS.values()))
        if unknown := set(self.extra_settings) - known:
            raise ValueError(f"no service has the settings {sorted(unknown)}")


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
        """The role's environment: what the stack decides, for each role that has the setting
        (names derived from the role's settings class, as the operator's renderer does)."""
        stack_settings: dict[str, Any] = {
            "name": self.config.name,
            "bootstrap_servers": self.broker.bootstrap,
            "host": "127.0.0.1",
            "port": self.ports[role],
            "model_repository": self.model_repository,
            "triton_url": self.triton.http_url,
            # One long-lived Python-backend model serves every version in place.
            "triton_live": True,
            "model_poll_s": 0.25,  # a probe of the live model is cheap
            "feature_url": self.url("feature"),
            "database_url": f"sqlite+aiosqlite:///{self.workdir / 'features.db'}",
            "checkpoint_dir": self.workdir / "checkpoints",
            "architecture": self.config.architecture,
            "export_interval_s": self.config.export_interval_s,
            **self.config.extra_settings,
        }
        if role == "trainer":
            stack_settings["triton_admin_key"] = self.triton.admin_key
        cls = ROLE_SETTINGS[role]
        env = dict(os.environ)
        env["OMP_NUM_THREADS"] = env.get("OMP_NUM_THREADS", "1")
        env.update(
            settings_env(cls, **{k: v for k, v in stack_settings.items() if k in cls.model_fields})
        )
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
        process.wait_ready(lambda: http_ok(f"{self.url(role)}{routes.HEALTH}"), timeout=120)

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
