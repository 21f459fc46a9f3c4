"""Leader election on a ``coordination.k8s.io`` Lease: one active operator among its replicas.

Kopf's peering pauses every operator of equal priority, and every replica of a Deployment has
the same: the chart's former ``peering.enabled`` left all replicas paused, processing nothing,
logging nothing and reporting ready. Here the replicas compete for a Lease instead (the
algorithm of client-go's leaderelection): the holder renews it every ``renew_seconds``; a
standby takes it over once it has seen no renewal for ``lease_seconds`` (measured on its own
clock from when it saw the record change, so clock skew between nodes does not matter), or at
once when the holder releases it on shutdown. Only the holder runs Kopf (standalone).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from freshrank_operator.kube import Conflict, KubeClient

__all__ = ["LEASE_API_VERSION", "LeadershipLost", "LeaseElector"]

log = logging.getLogger("freshrank.operator.leader")
LEASE_API_VERSION = "coordination.k8s.io/v1"


class LeadershipLost(RuntimeError):
    """The Lease could not be renewed in time: another replica may be leading now."""


class _Flag(Protocol):
    def is_set(self) -> bool: ...


def _micro_time() -> str:
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1e6):06d}Z"


@dataclass
class LeaseElector:
    client: KubeClient
    namespace: str
    name: str
    identity: str
    lease_seconds: int = 15
    renew_seconds: float = 2.0
    clock: Callable[[], float] = time.monotonic
    holder: str | None = None  # who holds the Lease, as last seen
    leading: bool = False
    _observed: tuple[Any, ...] | None = field(default=None, repr=False)
    _observed_at: float = field(default=0.0, repr=False)
    _observed_duration: float = field(default=0.0, repr=False)

    def _observe(self, spec: dict[str, Any]) -> None:
        record = (spec.get("holderIdentity"), spec.get("renewTime"), spec.get("acquireTime"))
        if record != self._observed:
            self._observed, self._observed_at = record, self.clock()
        self._observed_duration = float(spec.get("leaseDurationSeconds") or self.lease_seconds)
        self.holder = spec.get("holderIdentity") or None

    def held_by_another(self) -> bool:
        """Another replica holds the Lease and renewed it within its duration (as we saw)."""
        return (
            self.holder is not None
            and self.holder != self.identity
            and self.clock() - self._observed_at < self._observed_duration
        )

    def _spec(self, previous: dict[str, Any]) -> dict[str, Any]:
        now = _micro_time()
        taking_over = previous.get("holderIdentity") != self.identity
        transitions = int(previous.get("leaseTransitions") or 0)
        return {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": self.lease_seconds,
            "acquireTime": now if taking_over else previous.get("acquireTime", now),
            "renewTime": now,
            "leaseTransitions": transitions + 1 if taking_over and previous else transitions,
        }

    async def try_acquire_or_renew(self) -> bool:
        """One attempt; True when this replica holds the Lease afterwards."""
        lease = await self.client.get_or_none(LEASE_API_VERSION, "Lease", self.namespace, self.name)
        if lease is None:
            spec = self._spec({})
            body = {
                "apiVersion": LEASE_API_VERSION,
                "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace},
                "spec": spec,
            }
            try:
                await self.client.create(body)
            except Conflict:
                return False  # another replica created it first
            return self._won(spec)
        spec = dict(lease.get("spec") or {})
        self._observe(spec)
        if self.held_by_another():
            self.leading = False
            return False
        lease["spec"] = self._spec(spec)
        try:
            await self.client.replace(lease)  # its resourceVersion: a compare-and-swap
        except Conflict:
            return False
        return self._won(lease["spec"])

    def _won(self, spec: dict[str, Any]) -> bool:
        self._observe(spec)
        if not self.leading:
            log.info("leading", extra={"lease": f"{self.namespace}/{self.name}"})
        self.leading = True
        return True

    async def acquire(self, stop: _Flag | None = None) -> bool:
        """Wait until this replica leads (True), or until ``stop`` is set (False)."""
        announced: str | None = None
        while stop is None or not stop.is_set():
            try:
                if await self.try_acquire_or_renew():
                    return True
            except Exception as exc:  # the API server may be briefly unreachable
                log.warning("lease check failed", extra={"error": str(exc)})
            if self.holder != announced:
                announced = self.holder
                log.info(
                    "standing by",
                    extra={"lease": f"{self.namespace}/{self.name}", "leader": self.holder},
                )
            await asyncio.sleep(self.renew_seconds)
        return False

    async def keep(self) -> None:
        """Renew while leading; raise ``LeadershipLost`` when renewal fails for too long."""
        deadline = self.clock() + self.lease_seconds * 2 / 3  # client-go's RenewDeadline ratio
        while True:
            await asyncio.sleep(self.renew_seconds)
            try:
                if await self.try_acquire_or_renew():
                    deadline = self.clock() + self.lease_seconds * 2 / 3
                    continue
            except Exception as exc:
                log.warning("lease renewal failed", extra={"error": str(exc)})
            if not self.leading or self.clock() > deadline:
                self.leading = False
                raise LeadershipLost(
                    f"lost the Lease {self.namespace}/{self.name} (holder now: {self.holder})"
                )

    async def release(self) -> None:
        """Give the Lease up at shutdown so a standby takes over at once."""
        if not self.leading:
            return
        self.leading = False
        try:
            lease = await self.client.get(LEASE_API_VERSION, "Lease", self.namespace, self.name)
            spec = dict(lease.get("spec") or {})
            if spec.get("holderIdentity") != self.identity:
                return
            spec.update(holderIdentity=None, leaseDurationSeconds=1, renewTime=_micro_time())
            lease["spec"] = spec
            await self.client.replace(lease)
        except Exception as exc:  # it expires by itself
            log.warning("lease release failed", extra={"error": str(exc)})
