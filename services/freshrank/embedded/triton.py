"""The embedded Triton: ``tritonserver`` from the ``nvidia-pytriton`` wheel.

The wheel ships the server, the Python backend and one backend stub per Python version; we
assemble a backend directory in our work dir, leaving site-packages untouched: the Python
backend with the stub of this interpreter (it must match; this environment's interpreter
goes first on ``PATH`` so the stub imports torch and numpy from it), and our own C++ backend
for the live model (``embedded.live_backend``: TorchScript inside tritonserver, no stub).
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Self

import pytriton

from freshrank.core.model_repo import LIVE_BACKEND
from freshrank.core.triton_auth import server_flags
from freshrank.embedded.live_backend import LIBRARY_NAME, build_live_backend
from freshrank.embedded.process import EmbeddedComponent, ManagedProcess, free_port, http_ok

__all__ = ["EmbeddedTriton", "triton_distribution"]


def triton_distribution() -> Path:
    return Path(pytriton.__file__).parent / "tritonserver"


def _prepare_backends(target: Path) -> Path:
    dist = triton_distribution()
    python_dir = target / "python"
    python_dir.mkdir(parents=True, exist_ok=True)
    for name in ("libtriton_python.so", "triton_python_backend_utils.py"):
        link = python_dir / name
        if not link.exists():
            link.symlink_to(dist / "backends" / "python" / name)
    stub = python_dir / "triton_python_backend_stub"
    if not stub.exists():
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        shutil.copy2(dist / "python_backend_stubs" / version / "triton_python_backend_stub", stub)
    live_dir = target / LIVE_BACKEND
    live_dir.mkdir(exist_ok=True)
    library = live_dir / LIBRARY_NAME
    built = build_live_backend() / LIBRARY_NAME
    if library.is_symlink() and library.resolve() != built.resolve():
        library.unlink()  # built again since (a new source or torch)
    if not library.is_symlink():
        library.symlink_to(built)
    return target


def _server_env(extra: Mapping[str, str]) -> dict[str, str]:
    env = {**os.environ, **extra}
    libs = Path(pytriton.__file__).parent.parent / "nvidia_pytriton.libs"
    env["LD_LIBRARY_PATH"] = ":".join(p for p in (str(libs), env.get("LD_LIBRARY_PATH")) if p)
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    return env


class EmbeddedTriton(EmbeddedComponent):
    """``tritonserver --model-control-mode=explicit`` over ``model_repository``.

    ``env``: added to the server's environment, which its backends read
    (``FRESHRANK_TRITON_THREADS``, ``FRESHRANK_TRITON_DEVICE``: ``embedded.live_backend`` and
    ``core.triton_python_model``).
    """

    startup_timeout = 90.0

    def __init__(
        self,
        workdir: Path,
        model_repository: Path,
        *,
        model_config_name: str = "python",
        load_models: Sequence[str] = (),
        http_port: int | None = None,
        grpc_port: int | None = None,
        metrics_port: int | None = None,
        admin_key: str = "",
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.model_repository = model_repository
        # Non-empty: the control APIs (load/unload, config, ...) answer only requests that
        # carry it (core.triton_auth); inference and health stay open.
        self.admin_key = admin_key
        self.http_port = http_port or free_port()
        self.grpc_port = grpc_port or free_port()
        self.metrics_port = metrics_port or free_port()
        self.http_url = f"127.0.0.1:{self.http_port}"
        self.grpc_url = f"127.0.0.1:{self.grpc_port}"
        backends = _prepare_backends(workdir / "triton-backends")
        argv = [
            str(triton_distribution() / "bin" / "tritonserver"),
            f"--model-repository={model_repository}",
            f"--backend-directory={backends}",
            "--model-control-mode=explicit",
            f"--model-config-name={model_config_name}",
            f"--http-port={self.http_port}",
            f"--grpc-port={self.grpc_port}",
            f"--metrics-port={self.metrics_port}",
            "--http-address=127.0.0.1",
            "--grpc-address=127.0.0.1",
            "--log-verbose=0",
            "--exit-on-error=false",
            # Our configs are complete; auto-completion would start one more Python stub
            # (another torch import, seconds) for every model load.
            "--disable-auto-complete-config",
            *(f"--load-model={name}" for name in load_models),
            *(server_flags(admin_key) if admin_key else []),
        ]
        self.process = ManagedProcess(
            "triton", argv, log_path=workdir / "logs" / "triton.log", env=_server_env(env or {})
        )

    def start(self, timeout: float | None = None) -> Self:
        self.model_repository.mkdir(parents=True, exist_ok=True)  # tritonserver requires it
        return super().start(timeout)

    def ready(self) -> bool:
        return http_ok(f"http://{self.http_url}/v2/health/live")
