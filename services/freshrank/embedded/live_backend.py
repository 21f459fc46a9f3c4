"""The live ranker's Triton backend (``live_backend.cc``), built once per machine.

The embedded Triton's wheel has only the Python backend, whose every request crosses into a
stub process and back. ``live_backend.cc`` runs the TorchScript forward inside tritonserver
instead, as production's ``pytorch_libtorch`` does, with libtorch from this environment's
torch wheel. It compiles against the Triton C API headers shipped in the ``triton-sys``
crate (crates.io, pinned by digest; they stay in the cache, not in this repository) with the
machine's ``g++``, into ``~/.cache/freshrank/triton-backend/<key>/`` (``FRESHRANK_CACHE``
moves the cache), keyed by the source, the torch version and the compiler: only a new
machine or a changed source pays the build (about 15 s).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import importlib.metadata
import importlib.util
import io
import os
import shutil
import subprocess
import tarfile
import urllib.request
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

from freshrank.core.model_repo import LIVE_BACKEND

__all__ = ["LIBRARY_NAME", "BackendBuildError", "build_live_backend"]

# Triton looks for backend "<name>" as <backend dir>/<name>/libtriton_<name>.so.
LIBRARY_NAME = f"libtriton_{LIVE_BACKEND}.so"

# Triton's C API headers (backend API 1.16, which the wheel's Triton 2.51 (API 1.19) serves).
_HEADERS_CRATE = "https://static.crates.io/crates/triton-sys/triton-sys-0.2.0.crate"
_HEADERS_SHA256 = "10f5acb5060e1e726182d9f268ffee22c5444a38343a9466f4cc12d64b037e53"
_HEADERS_IN_CRATE = "triton-sys-0.2.0/deps/core/include/triton/core/"
_COMPILER = os.environ.get("CXX", "g++")


class BackendBuildError(RuntimeError):
    """The live backend could not be built here (no compiler, no headers, a compile error)."""


def cache_root() -> Path:
    base = os.environ.get("FRESHRANK_CACHE") or Path.home() / ".cache" / "freshrank"
    return Path(base) / "triton-backend"


@functools.cache  # every embedded Triton asks; the compiler and the hash once per process
def build_live_backend() -> Path:
    """The directory holding ``LIBRARY_NAME``, built first when this machine lacks it."""
    source = resources.files("freshrank.embedded").joinpath("live_backend.cc").read_bytes()
    torch_version = importlib.metadata.version("torch").encode()
    key = hashlib.sha256(source + torch_version + _compiler_version()).hexdigest()[:16]
    target = cache_root() / key
    if (target / LIBRARY_NAME).is_file():
        return target
    with _exclusive(cache_root() / ".lock"):  # one build per machine, not one per process
        if not (target / LIBRARY_NAME).is_file():
            _build(source, target, _torch_dir())
    return target


def _torch_dir() -> Path:
    """The installed torch package (headers, libraries), found without importing it."""
    spec = importlib.util.find_spec("torch")
    if spec is None or spec.origin is None:
        raise BackendBuildError("the live backend needs torch in this environment")
    return Path(spec.origin).parent


def _compiler_version() -> bytes:
    try:
        return subprocess.run(
            [_COMPILER, "--version"], capture_output=True, check=True, timeout=60
        ).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        raise BackendBuildError(
            f"the live backend needs a C++ compiler ({_COMPILER}): {exc}"
        ) from exc


def _build(source: bytes, target: Path, torch_dir: Path) -> None:
    work = target.with_name(f".{target.name}.building")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    headers = _triton_headers(work / "include" / "triton" / "core")
    (work / "live_backend.cc").write_bytes(source)
    command = [
        _COMPILER,
        "-std=c++20",  # torch 2.13's headers
        "-O2",
        "-fPIC",
        "-shared",
        f"-I{headers.parents[1]}",
        f"-I{torch_dir / 'include'}",
        f"-I{torch_dir / 'include' / 'torch' / 'csrc' / 'api' / 'include'}",
        str(work / "live_backend.cc"),
        f"-L{torch_dir / 'lib'}",
        "-ltorch_cpu",  # CUDA is loaded at run time, only for a GPU device
        "-lc10",
        f"-Wl,-rpath,{torch_dir / 'lib'}",
        "-o",
        str(work / LIBRARY_NAME),
    ]
    built = subprocess.run(command, capture_output=True, text=True, timeout=1800)
    if built.returncode != 0:
        raise BackendBuildError(f"building the live backend failed:\n{built.stderr[-4000:]}")
    shutil.rmtree(target, ignore_errors=True)
    work.rename(target)  # complete or absent: never a half-written library


def _triton_headers(destination: Path) -> Path:
    try:
        with urllib.request.urlopen(_HEADERS_CRATE, timeout=120) as response:
            crate = response.read()
    except OSError as exc:
        raise BackendBuildError(f"Triton's headers ({_HEADERS_CRATE}): {exc}") from exc
    digest = hashlib.sha256(crate).hexdigest()
    if digest != _HEADERS_SHA256:
        raise BackendBuildError(f"{_HEADERS_CRATE}: sha256 {digest}, expected {_HEADERS_SHA256}")
    destination.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(crate), mode="r:gz") as archive:
        for member in archive.getmembers():
            if member.isfile() and member.name.startswith(_HEADERS_IN_CRATE):
                name = member.name.removeprefix(_HEADERS_IN_CRATE)
                if "/" not in name and name.endswith(".h"):
                    extracted = archive.extractfile(member)
                    assert extracted is not None  # a regular file
                    (destination / name).write_bytes(extracted.read())
    if not (destination / "tritonbackend.h").is_file():
        raise BackendBuildError(f"{_HEADERS_CRATE} holds no tritonbackend.h")
    return destination


@contextlib.contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
