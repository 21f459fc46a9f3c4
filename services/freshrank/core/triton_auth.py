"""Triton's control APIs behind a key: which APIs, which header, the server flags.

Triton serves inference and its control APIs (load/unload, model config, shared memory,
tracing, log settings) on the same ports. With ``--model-control-mode=explicit`` one
unauthenticated ``POST /v2/repository/models/<m>/unload`` takes the model off the ranking
path, so every deployment (the operator's pods and the embedded server) restricts the control
APIs to callers that send ``ADMIN_KEY_HEADER``: the trainer, which loads each new version.
Inference, health and metadata stay open (the ranking service and the probes use them).
"""

from __future__ import annotations

__all__ = ["ADMIN_KEY_HEADER", "RESTRICTED_APIS", "admin_headers", "server_flags"]

ADMIN_KEY_HEADER = "freshrank-triton-key"
# Triton's names for its API groups (``tritonserver --help``, 2.51): everything but
# health, metadata and inference.
RESTRICTED_APIS = (
    "model-repository",
    "model-config",
    "shared-memory",
    "statistics",
    "trace",
    "logging",
)


def server_flags(key: str) -> list[str]:
    """``tritonserver`` flags that restrict the control APIs (HTTP and gRPC) to ``key``.

    ``key`` may be a Kubernetes ``$(VAR)`` reference, expanded by the kubelet from the
    container's env (the key itself then never appears in the pod spec).
    """
    restriction = f"{','.join(RESTRICTED_APIS)}:{ADMIN_KEY_HEADER}={key}"
    return [
        f"--http-restricted-api={restriction}",
        f"--grpc-restricted-protocol={restriction}",
    ]


def admin_headers(key: str) -> dict[str, str]:
    """The headers a control call carries ({} without a key: an unrestricted server)."""
    return {ADMIN_KEY_HEADER: key} if key else {}
