"""The embedded PostgreSQL: a real server the tests start, stop and remove themselves."""

from __future__ import annotations

import os
from pathlib import Path

import psycopg
import pytest

from freshrank.embedded import EmbeddedPostgres
from freshrank.embedded import postgres as embedded_postgres

pytestmark = pytest.mark.integration


def _connect(server: EmbeddedPostgres) -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(server.url(driver="postgresql"), autocommit=True)


def _query(server: EmbeddedPostgres, sql: str) -> object:
    with _connect(server) as connection:
        row = connection.execute(sql).fetchone()
    assert row is not None
    return row[0]


def test_data_survives_a_restart_on_the_same_port_and_close_removes_it(tmp_path: Path) -> None:
    server = EmbeddedPostgres(tmp_path)
    with server:
        with _connect(server) as connection:
            connection.execute("CREATE TABLE kept AS SELECT 42 AS answer")
        port = server.port
        server.stop()
        assert not server.ready()
        server.start()
        assert server.port == port
        assert _query(server, "SELECT answer FROM kept") == 42
    assert not server.data_root.exists()
    assert not server.ready()


@pytest.mark.skipif(os.geteuid() != 0, reason="PostgreSQL runs as the caller when not root")
def test_as_root_the_server_runs_unprivileged(tmp_path: Path) -> None:
    with EmbeddedPostgres(tmp_path) as server:
        assert server.process.pid is not None
        status = Path(f"/proc/{server.process.pid}/status").read_text()
        real_uid = int(
            next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1]
        )
        assert real_uid != 0
        assert _query(server, "SELECT current_setting('fsync')") == "off"


@pytest.mark.skipif(os.geteuid() != 0, reason="only root's server needs a reachable copy")
def test_binaries_nobody_can_reach_are_copied_where_it_can(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A clone under /root (mode 0700) is out of nobody's reach: the server runs from a copy.
    monkeypatch.setattr(embedded_postgres, "_others_can_reach", lambda _path: False)
    with EmbeddedPostgres(tmp_path) as server:
        assert not server.bin.is_relative_to(embedded_postgres.postgres_binaries().parent)
        assert _query(server, "SELECT 1") == 1
