"""Kafka clients with the settings every omnistock process shares, and topic creation."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog
from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from omnistock.platform.settings import Settings


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """A topic as omnistock creates it. Compacted topics keep the latest value per key."""

    name: str
    compacted: bool = False
    partitions: int | None = None  # None: the configured default
    retention_ms: int | None = None
    description: str = ""
    config: dict[str, str] = field(default_factory=dict)


# librdkafka's own log lines come here instead of raw to stderr: as structured events, and a
# line that repeats (every client logs a failed connect several times a second while a broker
# is away) once per ``REPEAT_S`` with how many were held back.
CLIENT_LOG = logging.getLogger("omnistock.kafka")
REPEAT_S = 30.0
_DIGITS = re.compile(r"\d+(\.\d+)?")


class Repeats(logging.Filter):
    """Passes a librdkafka line the first time, then once per ``every_s`` while it repeats."""

    def __init__(self, every_s: float = REPEAT_S, clock: Callable[[], float] = time.monotonic):
        super().__init__()
        self.every_s, self.clock = every_s, clock
        self._shown: dict[tuple[str, str], float] = {}
        self._held: dict[tuple[str, str], int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        facility, message = _parts(record)
        # Durations and counters differ from one repeat to the next; the rest says what it is.
        key = (facility, _DIGITS.sub("#", message))
        now = self.clock()
        shown = self._shown.get(key)
        if shown is not None and now - shown < self.every_s:
            self._held[key] = self._held.get(key, 0) + 1
            return False
        self._shown[key] = now
        record.held_back = self._held.pop(key, 0)
        if len(self._shown) > 1000:  # a long outage of many brokers: forget the oldest
            oldest = min(self._shown, key=self._shown.__getitem__)
            del self._shown[oldest]
        return True


class _Structured(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        facility, message = _parts(record)
        structlog.get_logger("kafka").log(
            record.levelno,
            "kafka_client",
            facility=facility,
            detail=message,
            held_back=getattr(record, "held_back", 0),
        )


def _parts(record: logging.LogRecord) -> tuple[str, str]:
    # The client logs ("%s [%s] %s", facility, client name, message).
    args = record.args if isinstance(record.args, tuple) else ()
    if len(args) == 3:
        return str(args[0]), str(args[2])
    return "", record.getMessage()


def _client_log() -> logging.Logger:
    if not CLIENT_LOG.handlers:
        handler = _Structured()
        handler.addFilter(Repeats())
        CLIENT_LOG.addHandler(handler)
        CLIENT_LOG.propagate = False
        CLIENT_LOG.setLevel(logging.INFO)
    return CLIENT_LOG


def silence_client_log() -> None:
    """For a process whose Kafka clients only observe (the simulator, the drills): their
    connection errors while a drill has the broker down are expected, not news."""
    _client_log().setLevel(logging.CRITICAL + 1)


def producer_config(settings: Settings, **overrides: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "bootstrap.servers": settings.kafka_bootstrap,
        # Idempotence keeps per-partition order and drops broker-side duplicates from retries.
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 2,
        "compression.type": "lz4",
        "message.timeout.ms": 30000,
        "client.id": "omnistock",
        "logger": _client_log(),
    }
    config.update(overrides)
    return config


def consumer_config(settings: Settings, group: str, **overrides: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "bootstrap.servers": settings.kafka_bootstrap,
        "group.id": group,
        # Offsets are committed by hand after the effect's transaction has committed.
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "isolation.level": "read_committed",
        "session.timeout.ms": 10000,
        "heartbeat.interval.ms": 1000,
        "max.poll.interval.ms": 300000,
        "fetch.wait.max.ms": 20,
        "client.id": "omnistock",
        "logger": _client_log(),
    }
    if settings.consumer_instance_id:
        config["group.instance.id"] = settings.consumer_instance_id
    config.update(overrides)
    return config


def create_producer(settings: Settings, **overrides: Any) -> Producer:
    return Producer(producer_config(settings, **overrides))


def admin_client(settings: Settings) -> AdminClient:
    config: dict[str, Any] = {
        "bootstrap.servers": settings.kafka_bootstrap,
        "logger": _client_log(),
    }
    return AdminClient(config)


def topic_config(spec: TopicSpec, settings: Settings) -> dict[str, str]:
    config = {"min.insync.replicas": str(settings.kafka_min_insync_replicas)}
    if spec.compacted:
        config.update(
            {
                "cleanup.policy": "compact",
                # Keep tombstones long enough for slow readers to see deletes.
                "delete.retention.ms": str(24 * 3600 * 1000),
                "min.compaction.lag.ms": "0",
                # Only closed segments are compacted: at a busy hour's rate a 1 GB segment
                # stays open for hours, and a reader starting from the beginning (a new
                # storefront) would read every version of every key written meanwhile.
                "segment.ms": str(3600 * 1000),
                "segment.bytes": str(64 * 1024 * 1024),
                "min.cleanable.dirty.ratio": "0.2",
            }
        )
    if spec.retention_ms is not None:
        config["retention.ms"] = str(spec.retention_ms)
    config.update(spec.config)
    return config


def ensure_topics(
    settings: Settings, specs: list[TopicSpec], timeout_s: float = 30.0
) -> dict[str, str]:
    """Create missing topics; returns {topic: "created" | "exists"}. Existing ones are kept."""
    admin = admin_client(settings)
    existing = set(admin.list_topics(timeout=timeout_s).topics)
    outcome = {spec.name: "exists" for spec in specs if spec.name in existing}
    new = [
        NewTopic(
            spec.name,
            num_partitions=spec.partitions or settings.kafka_partitions,
            replication_factor=settings.kafka_replication_factor,
            config=topic_config(spec, settings),
        )
        for spec in specs
        if spec.name not in existing
    ]
    if not new:
        return outcome
    for name, future in admin.create_topics(new, operation_timeout=timeout_s).items():
        try:
            future.result(timeout=timeout_s)
            outcome[name] = "created"
        except KafkaException as exc:
            if exc.args and exc.args[0].name() == "TOPIC_ALREADY_EXISTS":
                outcome[name] = "exists"
            else:
                raise
    return outcome


def delete_topics(settings: Settings, names: list[str], timeout_s: float = 30.0) -> None:
    admin = admin_client(settings)
    existing = set(admin.list_topics(timeout=timeout_s).topics)
    doomed = [name for name in names if name in existing]
    if doomed:
        for future in admin.delete_topics(doomed, operation_timeout=timeout_s).values():
            future.result(timeout=timeout_s)


def dead_letter_topic(consumer_group: str) -> str:
    return f"{consumer_group}.dlq"
