"""A deterministic event stream with planted structure a model can learn.

Items belong to topics and have a Zipf popularity inside their topic. Each user has a primary
and a secondary topic: most of their events pick an item from those topics, the rest follow
global popularity. A popularity baseline therefore ranks the same head items for everyone and
misses each user's taste; a personalized model finds it. At ``drift_at`` (a fraction of the
stream) every user's tastes move ``topics // 2`` topics over: a model that stops learning
decays, one that keeps learning recovers.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import numpy as np

from freshrank.core.codec import EventType, InteractionEvent

__all__ = ["SyntheticConfig", "SyntheticStream"]

_TYPES = np.array(
    [EventType.VIEW, EventType.CLICK, EventType.ADD_TO_CART, EventType.PURCHASE], dtype=np.int64
)
_TYPE_P = np.array([0.6, 0.25, 0.1, 0.05])
_CHUNK = 8192


@dataclasses.dataclass(frozen=True, kw_only=True)
class SyntheticConfig:
    users: int = 1000
    items: int = 500
    topics: int = 10
    events: int = 50_000
    drift_at: float | None = 0.5  # fraction of the stream; None: no drift
    primary_share: float = 0.7
    secondary_share: float = 0.2  # the rest follows global popularity
    zipf: float = 1.1
    seed: int = 7
    start_ms: int = 1_700_000_000_000
    interval_ms: int = 100

    def __post_init__(self) -> None:
        if self.users < 1 or self.items < self.topics or self.topics < 2:
            raise ValueError("need users >= 1, topics >= 2 and items >= topics")
        if self.drift_at is not None and not 0.0 < self.drift_at < 1.0:
            raise ValueError("drift_at must be a fraction in (0, 1)")
        if self.primary_share + self.secondary_share > 1.0:
            raise ValueError("primary_share + secondary_share must be <= 1")


class SyntheticStream:
    """The planted world and the events it generates (same seed, same events)."""

    def __init__(self, config: SyntheticConfig | None = None) -> None:
        self.config = cfg = config or SyntheticConfig()
        rng = np.random.default_rng(cfg.seed)
        self.item_topic = rng.integers(0, cfg.topics, size=cfg.items)
        self.item_topic[: cfg.topics] = np.arange(cfg.topics)  # every topic has an item
        weight = 1.0 / np.power(rng.permutation(cfg.items) + 1.0, cfg.zipf)
        self.item_weight = weight / weight.sum()
        self.primary = rng.integers(0, cfg.topics, size=cfg.users)
        self.secondary = (self.primary + rng.integers(1, cfg.topics, size=cfg.users)) % cfg.topics
        self._topic_items = [np.flatnonzero(self.item_topic == t) for t in range(cfg.topics)]
        self._topic_p = [self.item_weight[i] / self.item_weight[i].sum() for i in self._topic_items]
        self.drift_index = (
            int(cfg.events * cfg.drift_at) if cfg.drift_at is not None else cfg.events
        )

    @staticmethod
    def user_id(index: int) -> str:
        return f"u{index}"

    @staticmethod
    def item_id(index: int) -> str:
        return f"i{index}"

    def taste(self, user: int, *, drifted: bool) -> tuple[int, int]:
        """(primary, secondary) topic of ``user`` before or after the drift."""
        shift = self.config.topics // 2 if drifted else 0
        topics = self.config.topics
        return (
            int(self.primary[user] + shift) % topics,
            int(self.secondary[user] + shift) % topics,
        )

    def top_items(self, user: int, k: int, *, drifted: bool) -> list[str]:
        """The ``k`` items ``user`` is most likely to pick: the planted ground truth."""
        cfg = self.config
        primary, secondary = self.taste(user, drifted=drifted)
        p = self.item_weight * (1.0 - cfg.primary_share - cfg.secondary_share)
        for topic, share in ((primary, cfg.primary_share), (secondary, cfg.secondary_share)):
            items = self._topic_items[topic]
            p[items] += share * self._topic_p[topic]
        return [self.item_id(int(i)) for i in np.argsort(-p, kind="stable")[:k]]

    def events(self) -> Iterator[InteractionEvent]:
        cfg = self.config
        rng = np.random.default_rng(cfg.seed + 1)
        for start in range(0, cfg.events, _CHUNK):
            n = min(_CHUNK, cfg.events - start)
            users = rng.integers(0, cfg.users, size=n)
            choice = rng.random(n)
            popular = rng.choice(cfg.items, size=n, p=self.item_weight)
            types = rng.choice(_TYPES, size=n, p=_TYPE_P)
            within = rng.random(n)
            for j in range(n):
                index = start + j
                user = int(users[j])
                item = self._pick(user, index, float(choice[j]), float(within[j]), popular[j])
                yield InteractionEvent(
                    event_id=f"syn-{cfg.seed}-{index}",
                    user_id=self.user_id(user),
                    item_id=self.item_id(item),
                    type=int(types[j]),  # type: ignore[arg-type]
                    value=1.0,
                    timestamp_ms=cfg.start_ms + index * cfg.interval_ms,
                )

    def _pick(self, user: int, index: int, choice: float, within: float, popular: int) -> int:
        cfg = self.config
        primary, secondary = self.taste(user, drifted=index >= self.drift_index)
        if choice < cfg.primary_share:
            topic = primary
        elif choice < cfg.primary_share + cfg.secondary_share:
            topic = secondary
        else:
            return int(popular)
        cumulative = np.cumsum(self._topic_p[topic])
        slot = min(int(np.searchsorted(cumulative, within)), len(cumulative) - 1)
        return int(self._topic_items[topic][slot])
