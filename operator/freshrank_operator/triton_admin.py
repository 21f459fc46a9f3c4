"""The per-CR key of Triton's control API: a Secret the operator creates once.

Triton restricts load/unload and the other control APIs to requests carrying the key
(``freshrank.core.triton_auth``); Triton and the trainer read it from this Secret. A rendering
is pure and cannot make a random key, so the Secret is created here, once, with a fresh key and
the CR as owner (garbage-collected with it). An existing Secret of that name is used as it is:
a platform team may provide its own key (or rotate it: restart Triton and the trainer).
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from typing import Any

from freshrank_operator import render
from freshrank_operator.kube import Conflict, KubeClient

__all__ = ["ensure_triton_admin_secret"]

KEY_BYTES = 32


async def ensure_triton_admin_secret(client: KubeClient, cr: Mapping[str, Any]) -> bool:
    """Create the CR's Triton admin-key Secret if it does not exist; True when created."""
    meta = cr["metadata"]
    name = render.triton_admin_secret_name(meta["name"])
    if await client.get_or_none("v1", "Secret", meta["namespace"], name) is not None:
        return False
    manifest = render.triton_admin_secret(cr, secrets.token_urlsafe(KEY_BYTES))
    try:
        await client.create(manifest)
    except Conflict:  # created meanwhile (a concurrent reconcile): that key stands
        return False
    return True
