"""A child process that cannot outlive us and is always torn down with its whole group."""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import dataclasses
import logging
import os
import random
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
import weakref
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

__all__ = [
    "ComponentFailed",
    "EmbeddedComponent",
    "ManagedProcess",
    "StartStop",
    "Supervisor",
    "free_port",
    "http_ok",
    "wait_until",
]

log = logging.getLogger(__name__)
_PR_SET_PDEATHSIG = 1
_LIVE: weakref.WeakSet[ManagedProcess] = weakref.WeakSet()


class ComponentFailed(RuntimeError):
    """An embedded component exited or never became ready; carries the tail of its log."""


_EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_LOWEST_PORT = 10000  # below: ports that well-known services and their defaults use
_handed_out: set[int] = set()
_handed_out_lock = threading.Lock()


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on, for a server about to be started.

    Not a port from ``bind(0)``: the kernel takes those from its ephemeral range, the same
    range every outgoing connection's local port comes from, so between this check and the
    server's own bind a client socket (a test's, the broker's, Triton's) could take it and
    the server would fail to start (the likely cause of a Triton fixture that once failed to
    start in the suite).
    Ports below that range are never given to client sockets. None is handed out twice in
    one process; a port that another server holds, or that a closed one left in TIME_WAIT,
    fails the bind here and is skipped.
    """
    low, high = _LOWEST_PORT, _ephemeral_low() - 1
    if high - low < 1000:  # an unusual range: fall back to the kernel's choice
        return _kernel_port()
    rng = random.SystemRandom()
    with _handed_out_lock:
        for _ in range(200):
            port = rng.randint(low, high)
            if port not in _handed_out and _can_bind(port):
                _handed_out.add(port)
                return port
    return _kernel_port()


def _ephemeral_low() -> int:
    try:
        return int(_EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def _can_bind(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _kernel_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_ok(url: str, timeout: float = 1.0) -> bool:
    """True when ``url`` answers 200 (readiness probes)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _die_with_parent() -> None:
    """Runs in the child before exec: SIGKILL it when the parent dies, even by kill -9."""
    os.setsid()
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _child_setup(run_as: tuple[int, int] | None) -> Callable[[], None]:
    def setup() -> None:
        if run_as is not None:
            # Before the death signal: a credential change clears PR_SET_PDEATHSIG.
            os.setgid(run_as[1])
            os.setuid(run_as[0])
        _die_with_parent()

    return setup


def wait_until(
    ready: Callable[[], bool], *, timeout: float, interval: float = 0.2, what: str = "ready"
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return
        time.sleep(interval)
    raise TimeoutError(f"not {what} after {timeout:.0f}s")


class StartStop:
    """``with component:`` starts it on entry and stops it on exit, whatever happened."""

    def start(self) -> object:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.start()
        return self

    def close(self) -> None:
        """What leaving the ``with`` block does: stop (components with state also remove it)."""
        self.stop()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class ManagedProcess(StartStop):
    """Start ``argv`` with its output in ``log_path``; ``stop()`` kills the process group.

    ``run_as`` (uid, gid) drops root for servers that refuse it (PostgreSQL); ``stop_signal``
    is the one that asks the server for its fast, clean shutdown.
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        run_as: tuple[int, int] | None = None,
        stop_signal: signal.Signals = signal.SIGTERM,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.env = dict(os.environ if env is None else env)
        self.cwd = cwd
        self.run_as = run_as
        self.stop_signal = stop_signal
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log_file:
            self._proc = subprocess.Popen(
                self.argv,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
                cwd=self.cwd,
                preexec_fn=_child_setup(self.run_as),
            )
        _LIVE.add(self)
        log.info("started", extra={"component": self.name, "pid": self._proc.pid})

    def alive(self) -> bool:
        """Running (polling also reaps an exited process: no zombie stays behind)."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return self._proc.returncode if self._proc is not None else None

    def reap(self) -> None:
        """After the process exited: kill what is left of its group (e.g. Triton's Python
        stubs) and wait for it; ``start`` may then run it again."""
        proc = self._proc
        if proc is None or proc.poll() is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def wait_ready(self, probe: Callable[[], bool], timeout: float) -> None:
        def ready() -> bool:
            if not self.alive():
                raise ComponentFailed(f"{self.name} exited early:\n{self.log_tail()}")
            return probe()

        try:
            wait_until(ready, timeout=timeout, what=f"{self.name} ready")
        except TimeoutError as exc:
            self.stop()
            raise ComponentFailed(f"{exc}\n{self.log_tail()}") from exc

    def stop(self, grace: float = 10.0) -> None:
        """``stop_signal`` to the group, SIGKILL after ``grace`` seconds; idempotent."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        _LIVE.discard(self)
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, self.stop_signal)
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        # Children of the component (Triton's Python stubs) share its group.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        log.info("stopped", extra={"component": self.name, "returncode": proc.returncode})

    def kill(self) -> None:
        """Crash the component (SIGKILL, no grace): for failure tests."""
        if self._proc is not None and self._proc.poll() is None:
            os.killpg(self._proc.pid, signal.SIGKILL)
            self._proc.wait()


class EmbeddedComponent(StartStop):
    """A component backed by one ``ManagedProcess`` and a readiness probe."""

    process: ManagedProcess
    startup_timeout: float = 60.0

    def ready(self) -> bool:
        raise NotImplementedError

    def start(self, timeout: float | None = None) -> Self:
        self.process.start()
        self.process.wait_ready(self.ready, timeout or self.startup_timeout)
        return self

    def stop(self) -> None:
        self.process.stop()


@dataclasses.dataclass
class _Watch:
    """What the supervisor knows of one process."""

    process: ManagedProcess
    crashes: int = 0  # consecutive, reset once the process has run ``stable_s``
    started_at: float = dataclasses.field(default_factory=time.monotonic)
    restart_at: float | None = None  # set while a crashed process waits out its backoff


class Supervisor:
    """Restarts crashed processes with exponential backoff, as the kubelet restarts pods.

    A poll every ``interval`` reaps an exited process (no zombie is left behind), kills what
    is left of its process group (e.g. Triton's Python stubs), and starts it again with the
    same command, ports and environment after ``backoff_s * 2**(crashes - 1)`` seconds, at
    most ``max_backoff_s``. A process that stayed up ``stable_s`` starts again from the
    shortest backoff. ``restarts`` counts restarts by process name.

    Restarted processes are children of the supervisor's thread, and ``PR_SET_PDEATHSIG``
    fires when that thread ends: ``stop()`` therefore comes right before stopping them.
    """

    def __init__(
        self,
        *,
        interval: float = 0.5,
        backoff_s: float = 1.0,
        max_backoff_s: float = 30.0,
        stable_s: float = 60.0,
    ) -> None:
        self.interval = interval
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.stable_s = stable_s
        self.restarts: dict[str, int] = {}
        self._watched: dict[str, _Watch] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def watch(self, process: ManagedProcess) -> None:
        with self._lock:
            self._watched[process.name] = _Watch(process)

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="supervisor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop supervising (before stopping the processes, or they would be restarted)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            with self._lock:
                for watch in self._watched.values():
                    try:
                        self._check(watch)
                    except Exception:  # one failed restart must not end supervision
                        log.exception("supervision failed", extra={"component": watch.process.name})

    def _check(self, watch: _Watch) -> None:
        process, now = watch.process, time.monotonic()
        if watch.restart_at is None:
            if process.alive():
                if now - watch.started_at >= self.stable_s:
                    watch.crashes = 0
                return
            watch.crashes += 1
            delay = min(self.max_backoff_s, self.backoff_s * 2 ** (watch.crashes - 1))
            watch.restart_at = now + delay
            log.warning(
                "process exited: restarting after backoff",
                extra={
                    "component": process.name,
                    "returncode": process.returncode,
                    "backoff_s": delay,
                },
            )
            process.reap()
        if now >= watch.restart_at:
            process.start()
            watch.restart_at, watch.started_at = None, now
            self.restarts[process.name] = self.restarts.get(process.name, 0) + 1


@atexit.register
def _stop_all() -> None:
    for proc in list(_LIVE):
        proc.stop(grace=3.0)
