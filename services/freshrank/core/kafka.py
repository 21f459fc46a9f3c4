"""Kafka helpers over confluent-kafka: producer, batch consumer, dead-letter queue, topics.

Event values go through the one codec; the key is the user id (per-user order); the producer
puts the current trace context in a ``traceparent`` header and consumers read it back with
``context_from_headers``. Consumers never auto-commit: the caller commits offsets once the
effect of the batch is durable (exactly-once effect for the trainer and the feature store).
Blocking librdkafka calls run on one dedicated thread so the asyncio loop never stalls.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from confluent_kafka import (
    TIMESTAMP_NOT_AVAILABLE,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic
from pydantic import SecretStr

from freshrank.core.codec import (
    DEFAULT_TIME_WINDOW,
    EventTimeWindow,
    InteractionEvent,
    MalformedEvent,
    decode_record,
    encode_event,
)
from freshrank.core.settings import CommonSettings
from freshrank.core.telemetry import headers_with_trace

__all__ = [
    "CREDENTIAL_KEYS",
    "ERROR_HEADER",
    "LIBRDKAFKA_LOGGER",
    "SOURCE_HEADER",
    "AsyncConsumer",
    "CredentialKey",
    "DeadLetters",
    "DecodedBatch",
    "EventProducer",
    "KafkaCredentials",
    "MissingCredential",
    "admin_config",
    "consumer_config",
    "credentials_from_settings",
    "decode_batch",
    "ensure_topics",
    "event_time_window",
    "next_offsets",
    "producer_config",
    "record_time_ms",
    "security_config",
]

log = logging.getLogger(__name__)
# librdkafka writes its own lines (connection failures, rebalances) straight to stderr in its
# own format unless a logger is configured: every client config here routes them into Python
# logging, so they come out as our JSON lines. They are delivered from poll()/consume()/flush().
LIBRDKAFKA_LOGGER = logging.getLogger("freshrank.kafka.librdkafka")
ERROR_HEADER = "freshrank-error"
# "<topic>:<partition>:<offset>" of the original message. Dead letters are at least once (a
# crash after publishing, before the checkpoint, publishes again on restart): this is the key
# a DLQ consumer de-duplicates on.
SOURCE_HEADER = "freshrank-source"


class MissingCredential(ValueError):
    """A required key of the Kafka credentials is absent; ``key`` names it."""

    def __init__(self, key: str) -> None:
        super().__init__(f"no {key!r}")
        self.key = key


@dataclasses.dataclass(frozen=True, slots=True)
class KafkaCredentials:
    """SASL credentials for every Kafka client (admin, producer, consumer).

    The one source of the contract behind ``spec.kafka.credentialsSecret``: the Secret's keys
    (``CREDENTIAL_KEYS``), the defaults of the optional ones, and the librdkafka settings they
    become. The operator reads the Secret with it; the pods get the same keys as
    ``FRESHRANK_KAFKA_*`` settings (see ``CREDENTIAL_KEYS``) and build the same config.
    """

    username: str
    password: str = dataclasses.field(repr=False)
    mechanism: str = "SCRAM-SHA-512"
    security_protocol: str = "SASL_SSL"

    @classmethod
    def from_values(cls, values: Mapping[str, str | None]) -> KafkaCredentials:
        """From Secret-keyed values (``username``, ``password``, ``mechanism``, ...).

        Empty or absent optional keys take the defaults; absent required ones raise
        ``MissingCredential`` naming the Secret key.
        """
        fields: dict[str, str] = {}
        for key, field in CREDENTIAL_KEYS.items():
            value = values.get(key)
            if value:
                fields[field.attribute] = value
            elif field.required:
                raise MissingCredential(key)
        return cls(**fields)

    def client_config(self) -> dict[str, str]:
        """The librdkafka settings (merge into any producer/consumer/admin config)."""
        return {
            "security.protocol": self.security_protocol,
            "sasl.mechanism": self.mechanism,
            "sasl.username": self.username,
            "sasl.password": self.password,
        }


@dataclasses.dataclass(frozen=True, slots=True)
class CredentialKey:
    attribute: str  # of KafkaCredentials
    setting: str  # the services' settings field, env FRESHRANK_<SETTING upper>
    required: bool


# Secret key -> where its value goes. Documented in the CRD (spec.kafka.credentialsSecret).
CREDENTIAL_KEYS: dict[str, CredentialKey] = {
    "username": CredentialKey("username", "kafka_username", required=True),
    "password": CredentialKey("password", "kafka_password", required=True),
    "mechanism": CredentialKey("mechanism", "kafka_mechanism", required=False),
    "securityProtocol": CredentialKey("security_protocol", "kafka_security_protocol", False),
}


def producer_config(bootstrap: str, **extra: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        "logger": LIBRDKAFKA_LOGGER,
        "linger.ms": 5,
        "compression.type": "lz4",
        # A retried batch is written once per partition (no duplicates from lost acks). Kafka
        # supports it, and so does the embedded Tansu 0.6 (InitProducerId: tests/core).
        "enable.idempotence": True,
        "acks": "all",
    }
    config.update(extra)
    return config


def consumer_config(bootstrap: str, group: str, **extra: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        "logger": LIBRDKAFKA_LOGGER,
        "group.id": group,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        # Short sessions: the first group join otherwise waits ~23 s on Tansu.
        "session.timeout.ms": 6000,
        "heartbeat.interval.ms": 1000,
        "fetch.wait.max.ms": 50,
    }
    config.update(extra)
    return config


def ensure_topics(
    bootstrap: str,
    topics: Iterable[str],
    *,
    partitions: int = 1,
    timeout: float = 15.0,
    credentials: KafkaCredentials | None = None,
) -> None:
    """Create missing topics; existing ones are left as they are.

    ``credentials``: SASL/TLS settings for a secured cluster (None: plaintext).
    """
    admin = AdminClient(admin_config(bootstrap, credentials))
    try:
        existing = set(admin.list_topics(timeout=timeout).topics)
        missing = [NewTopic(t, num_partitions=partitions) for t in topics if t not in existing]
        if not missing:
            return
        for topic, future in admin.create_topics(missing, request_timeout=timeout).items():
            try:
                future.result(timeout)
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise
            log.info("topic ensured", extra={"topic": topic})
    finally:
        admin.poll(0)  # deliver what librdkafka logged meanwhile (connect failures: the why)


def credentials_from_settings(settings: CommonSettings) -> KafkaCredentials | None:
    """The credentials the pod got as ``FRESHRANK_KAFKA_*`` settings; None when it got none."""
    values = {
        key: _plain(getattr(settings, field.setting)) for key, field in CREDENTIAL_KEYS.items()
    }
    if not any(values[key] for key, field in CREDENTIAL_KEYS.items() if field.required):
        return None
    return KafkaCredentials.from_values(values)


def _plain(value: str | SecretStr) -> str:
    return value.get_secret_value() if isinstance(value, SecretStr) else value


def security_config(settings: CommonSettings) -> dict[str, str]:
    """The librdkafka SASL settings every client of a service merges in ({} for plaintext)."""
    credentials = credentials_from_settings(settings)
    return credentials.client_config() if credentials is not None else {}


def admin_config(bootstrap: str, credentials: KafkaCredentials | None = None) -> dict[str, Any]:
    config: dict[str, Any] = {"bootstrap.servers": bootstrap, "logger": LIBRDKAFKA_LOGGER}
    if credentials is not None:
        config.update(credentials.client_config())
    return config


class EventProducer:
    """Produce ``InteractionEvent``s keyed by user id, with the trace context in headers."""

    def __init__(self, bootstrap: str, topic: str, **config: Any) -> None:
        self.topic = topic
        self._producer = Producer(producer_config(bootstrap, **config))
        self._errors: list[str] = []

    def send(self, event: InteractionEvent, headers: Sequence[tuple[str, bytes]] = ()) -> None:
        """Queue one event (never blocks the loop for long: on a full queue it polls)."""
        self.send_raw(encode_event(event), key=event.user_id, headers=headers)

    def send_raw(
        self, value: bytes, *, key: str | bytes | None, headers: Sequence[tuple[str, bytes]] = ()
    ) -> None:
        """Queue pre-encoded bytes (replays, dead letters, malformed-input tests)."""
        while True:
            try:
                self._producer.produce(
                    self.topic,
                    value=value,
                    key=key,
                    headers=headers_with_trace(headers),
                    on_delivery=self._on_delivery,
                )
                break
            except BufferError:
                self._producer.poll(0.05)
        self._producer.poll(0)

    def _on_delivery(self, err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            self._errors.append(str(err))

    def flush(self, timeout: float = 30.0) -> None:
        """Wait until every queued event is acknowledged; raise if any delivery failed."""
        remaining = self._producer.flush(timeout)
        if remaining:
            raise KafkaException(f"{remaining} events not delivered after {timeout}s")
        if self._errors:
            errors, self._errors = self._errors, []
            raise KafkaException(f"{len(errors)} deliveries failed, first: {errors[0]}")

    async def flush_async(self, timeout: float = 30.0) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self.flush, timeout)


@dataclasses.dataclass(frozen=True, slots=True)
class DecodedBatch:
    """A polled batch split into good events and messages for the dead-letter topic."""

    events: list[tuple[Message, InteractionEvent]]
    malformed: list[tuple[Message, str]]


def decode_batch(
    messages: Iterable[Message], window: EventTimeWindow = DEFAULT_TIME_WINDOW
) -> DecodedBatch:
    """Split ``messages`` by the event contract (``freshrank.core.codec``), each event checked
    against its own record's time."""
    events: list[tuple[Message, InteractionEvent]] = []
    malformed: list[tuple[Message, str]] = []
    for message in messages:
        value = message.value()
        if value is None:
            malformed.append((message, "empty message value"))
            continue
        try:
            events.append((message, decode_record(value, record_time_ms(message), window)))
        except MalformedEvent as exc:
            malformed.append((message, exc.reason))
    return DecodedBatch(events, malformed)


def record_time_ms(message: Message) -> int | None:
    """The record's timestamp (producer create time or broker append time), if it has one."""
    kind, timestamp = message.timestamp()
    return None if kind == TIMESTAMP_NOT_AVAILABLE else int(timestamp)


def event_time_window(settings: CommonSettings) -> EventTimeWindow:
    """The contract's time window as configured (every consumer of a deployment shares it)."""
    return EventTimeWindow(
        max_ahead_ms=settings.event_max_ahead_s * 1000.0,
        max_behind_ms=settings.event_max_behind_s * 1000.0,
    )


class DeadLetters:
    """Forward the original bytes of a bad message with the reason in ``freshrank-error``
    and its origin in ``freshrank-source``.

    One owner per deployment: the feature ingester (it alone also sees the store's verdict on
    an event); the trainer applies the same contract and skips what it rejects."""

    def __init__(self, bootstrap: str, topic: str, **config: Any) -> None:
        self._producer = EventProducer(bootstrap, topic, **config)

    def publish(self, message: Message, reason: str) -> None:
        original = message.headers() or []
        pairs = original.items() if isinstance(original, dict) else original
        headers = [(k, v) for k, v in pairs if isinstance(v, bytes)]
        headers.append((ERROR_HEADER, reason.encode()))
        source = f"{message.topic()}:{message.partition()}:{message.offset()}"
        headers.append((SOURCE_HEADER, source.encode()))
        self._producer.send_raw(message.value() or b"", key=message.key(), headers=headers)
        log.warning(
            "event dead-lettered",
            extra={"reason": reason, "partition": message.partition(), "offset": message.offset()},
        )

    def flush(self, timeout: float = 30.0) -> None:
        self._producer.flush(timeout)


class AsyncConsumer:
    """A manually committed consumer whose blocking calls run on one dedicated thread."""

    def __init__(self, bootstrap: str, group: str, topics: Sequence[str], **config: Any) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"kafka-{group}")
        self._consumer = Consumer(consumer_config(bootstrap, group, **config))
        self._consumer.subscribe(list(topics))

    async def _run(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def poll_batch_sync(self, max_messages: int = 1000, timeout: float = 0.5) -> list[Message]:
        """Poll up to ``max_messages``; transport errors raise, partition EOFs are dropped."""
        messages = self._consumer.consume(max_messages, timeout)
        good: list[Message] = []
        for message in messages:
            error = message.error()
            if error is None:
                good.append(message)
            elif error.code() != KafkaError._PARTITION_EOF:
                raise KafkaException(error)
        return good

    async def poll_batch(self, max_messages: int = 1000, timeout: float = 0.5) -> list[Message]:
        return list(await self._run(self.poll_batch_sync, max_messages, timeout))

    async def commit(self, offsets: Sequence[TopicPartition]) -> None:
        """Synchronously commit ``offsets`` (next offset to read, per partition)."""
        if offsets:
            await self._run(
                lambda: self._consumer.commit(offsets=list(offsets), asynchronous=False)
            )

    async def committed(self, partitions: Sequence[TopicPartition]) -> list[TopicPartition]:
        return list(await self._run(self._consumer.committed, list(partitions), 10.0))

    async def seek(self, partition: TopicPartition) -> None:
        await self._run(self._consumer.seek, partition)

    def assignment(self) -> list[TopicPartition]:
        return list(self._consumer.assignment())

    @property
    def raw(self) -> Consumer:
        """The underlying consumer, for rebalance hooks; only touch it from the poll thread."""
        return self._consumer

    async def close(self) -> None:
        await self._run(self._consumer.close)
        self._executor.shutdown(wait=True)


def next_offsets(messages: Iterable[Message]) -> list[TopicPartition]:
    """The offsets to commit after ``messages``: last offset + 1 per partition."""
    latest: dict[tuple[str, int], int] = {}
    for message in messages:
        key = (message.topic() or "", message.partition() or 0)
        latest[key] = max(latest.get(key, -1), (message.offset() or 0) + 1)
    return [TopicPartition(t, p, o) for (t, p), o in sorted(latest.items())]
