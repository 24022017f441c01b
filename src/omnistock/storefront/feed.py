"""The feed: both compacted topics, read from their beginning into the read model.

Each replica builds its own model, so there is no consumer group, no inbox and no offset
commit: the partitions are assigned by hand from the first offset on every start. It runs in a
thread of its own (librdkafka's calls block; the event loop keeps serving meanwhile). The
replica turns ready once it holds everything the topics had when it started; from then on it
keeps reading, and every ``freshness_interval_s`` it asks the broker for the end offsets to
learn its lag and when it last held everything of each partition (its staleness).
"""

from __future__ import annotations

import ctypes
import dataclasses
import gc
import threading
import time
import typing
import uuid
from collections.abc import Sequence
from typing import Any, Literal

import msgspec
import structlog
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Message, TopicPartition
from prometheus_client import Counter, Gauge

from omnistock.contracts.inventory import AvailabilityChanged
from omnistock.contracts.pricing import PriceChanged
from omnistock.platform import events
from omnistock.platform.clock import Clock
from omnistock.platform.kafka import consumer_config
from omnistock.platform.settings import Settings
from omnistock.storefront.model import ReadModel
from omnistock.storefront.settings import StorefrontSettings

log = structlog.get_logger(__name__)

# ListOffsets' "latest" and "earliest" timestamps: one request for all partitions.
_LATEST, _EARLIEST = -1, -2
_TAIL_FETCH_BYTES = 8 * 1024 * 1024

ENTRIES = Gauge("omnistock_storefront_entries", "(channel, SKU) entries in the read model")
READY = Gauge("omnistock_storefront_ready", "1 once the replica caught up with both topics")
CATCH_UP_SECONDS = Gauge(
    "omnistock_storefront_catch_up_seconds", "from the feed's start to holding the topics' ends"
)
LAG = Gauge(
    "omnistock_storefront_lag_messages", "messages on the topic not yet in the model", ["topic"]
)
STALENESS = Gauge(
    "omnistock_storefront_staleness_seconds",
    "since the replica last held everything of its least fresh partition",
)
EVENTS = Counter(
    "omnistock_storefront_events", "events read, by topic and outcome", ["topic", "outcome"]
)


def _lean_envelope(contract: type[Any]) -> type[msgspec.Struct]:
    """An envelope that reads only what the model keeps: the payload, validated against the
    contract's own fields and types, tagged by the event type. Everything else is skipped
    while parsing: about three times faster per event than the platform's full decoder, which
    a cold start of millions of events feels."""
    hints = typing.get_type_hints(contract)
    fields: list[Any] = [
        (f.name, hints[f.name])
        if f.default is dataclasses.MISSING
        else (f.name, hints[f.name], f.default)
        for f in dataclasses.fields(contract)
    ]
    data = msgspec.defstruct(contract.__name__, fields, frozen=True, gc=False)
    return msgspec.defstruct(
        "Envelope",
        [("specversion", Literal["1.0"]), ("data", data)],
        tag_field="type",
        tag=contract.TYPE,
        frozen=True,
        gc=False,
    )


AvailabilityEnvelope = _lean_envelope(AvailabilityChanged)
PriceEnvelope = _lean_envelope(PriceChanged)


class Feed:
    def __init__(
        self,
        settings: Settings,
        own: StorefrontSettings,
        model: ReadModel,
        clock: Clock,
    ) -> None:
        self._settings = settings
        self._own = own
        self._model = model
        self._clock = clock
        self._topics = (own.availability_topic, own.prices_topic)
        self._decoders: dict[str, msgspec.json.Decoder[Any]] = {
            own.availability_topic: msgspec.json.Decoder(AvailabilityEnvelope),
            own.prices_topic: msgspec.json.Decoder(PriceEnvelope),
        }
        self._diagnosis = {
            own.availability_topic: events.EventDecoder(frozenset({AvailabilityChanged.TYPE})),
            own.prices_topic: events.EventDecoder(frozenset({PriceChanged.TYPE})),
        }
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failure: str | None = None
        self._partitions: list[TopicPartition] = []
        self._read_from: dict[tuple[str, int], int] = {}
        self._targets: dict[tuple[str, int], int] = {}
        self._behind: int | None = None
        self.ready = threading.Event()
        self.catch_up_s: float | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._guarded, name="storefront-feed", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def not_ready(self) -> str | None:
        """Readiness: None once caught up, else why not. A broker outage after that keeps the
        replica serving what it has (its staleness grows), rather than taking every replica
        out of service at once."""
        if self._failure is not None:
            return f"feed stopped: {self._failure}"
        if self._thread is None or not self._thread.is_alive():
            return "feed not running"
        if not self.ready.is_set():
            behind = "unknown" if self._behind is None else f"{self._behind}"
            return f"catching up with the topics ({behind} messages behind)"
        return None

    def _guarded(self) -> None:
        try:
            self._run()
        except Exception as exc:
            # Readiness reports it: the pod is restarted and a fresh replica reads again.
            self._failure = repr(exc)
            log.exception("storefront feed died")

    def _run(self) -> None:
        started = time.perf_counter()
        started_at = self._now()
        # Catching up wants large fetches (a fetch at a time per broker: the bigger, the
        # fewer round trips), which hold hundreds of megabytes of buffers; following the
        # topics afterwards needs little. So one consumer catches up and is closed, its memory
        # given back, and a lean one goes on from where it stopped.
        bulk = self._consumer(self._own.fetch_max_bytes)
        try:
            if not self._assign(bulk):
                return
            positions = self._catch_up(bulk)
        finally:
            bulk.close()
        if self._stop.is_set():
            return
        _return_freed_memory()
        tail = self._consumer(_TAIL_FETCH_BYTES)
        try:
            tail.assign([TopicPartition(t, p, offset) for (t, p), offset in positions.items()])
            self._read_from = positions
            self.catch_up_s = time.perf_counter() - started
            self._mark_ready(started_at)
            refreshed = 0.0
            while not self._stop.is_set():
                if time.monotonic() - refreshed >= self._own.freshness_interval_s:
                    refreshed = time.monotonic()
                    self._refresh(tail)
                self._receive(tail)
        finally:
            tail.close()

    def _catch_up(self, consumer: Consumer) -> dict[tuple[str, int], int]:
        # Millions of short-lived messages, no reference cycles among them: the collector
        # would run thousands of times for nothing (a sixth of the catch-up, measured).
        collecting = gc.isenabled()
        gc.disable()
        try:
            while not self._stop.is_set() and not self._caught_up(consumer):
                self._receive(consumer)
        finally:
            if collecting:
                gc.enable()
        return self._positions(consumer)

    def _consumer(self, fetch_bytes: int) -> Consumer:
        group = f"omnistock.storefront.{uuid.uuid4().hex}"  # never joined: nothing is committed
        overrides = {
            "client.id": "omnistock-storefront",
            "fetch.max.bytes": fetch_bytes,
            "max.partition.fetch.bytes": max(1024 * 1024, fetch_bytes // 4),
            "queued.max.messages.kbytes": max(1024, fetch_bytes // 2048),
            "fetch.wait.max.ms": 10,
            # Once its queue is full the fetcher pauses this long (1 s by default): far longer
            # than the feed takes to drain it while catching up.
            "fetch.queue.backoff.ms": 10,
        }
        return Consumer(consumer_config(self._settings, group, **overrides))

    def _receive(self, consumer: Consumer) -> None:
        # consume() waits for a full batch or its timeout; poll() returns the first message
        # at once, and consume(…, 0) then takes what else is already fetched.
        first = consumer.poll(0.1)
        if first is not None:
            self._apply([first, *consumer.consume(self._own.consume_batch - 1, 0)])

    def _assign(self, consumer: Consumer) -> bool:
        """All partitions of both topics from their first offset, and their ends now: the
        targets of the catch-up. Waits for the broker and the topics; False if stopped."""
        while not self._stop.is_set():
            try:
                metadata = consumer.list_topics(timeout=10)
                missing = [t for t in self._topics if not metadata.topics.get(t)]
                if not missing:
                    self._partitions = [
                        TopicPartition(topic, partition)
                        for topic in self._topics
                        for partition in sorted(metadata.topics[topic].partitions)
                    ]
                    self._read_from = self._offsets(consumer, _EARLIEST)
                    self._targets = self._offsets(consumer, _LATEST)
                    break
                log.warning("topics missing, waiting", topics=missing)
            except KafkaException as exc:
                log.warning("broker unreachable, waiting", error=str(exc))
            self._stop.wait(1.0)
        else:
            return False
        counts = {t: len(metadata.topics[t].partitions) for t in self._topics}
        self._model.availability_caught_up = [0.0] * counts[self._topics[0]]
        self._model.prices_caught_up = [0.0] * counts[self._topics[1]]
        consumer.assign(
            [TopicPartition(tp.topic, tp.partition, OFFSET_BEGINNING) for tp in self._partitions]
        )
        log.info("reading the topics", messages=self._lag(consumer, self._targets))
        return True

    def _offsets(
        self, consumer: Consumer, which: int, timeout_s: float = 10
    ) -> dict[tuple[str, int], int]:
        asked = [TopicPartition(tp.topic, tp.partition, which) for tp in self._partitions]
        found = consumer.offsets_for_times(asked, timeout=timeout_s)
        return {(tp.topic, tp.partition): tp.offset for tp in found}

    def _positions(self, consumer: Consumer) -> dict[tuple[str, int], int]:
        """The next offset to read per partition; where nothing was read yet, where the
        consumer was told to start."""
        return {
            (tp.topic, tp.partition): tp.offset
            if tp.offset >= 0
            else self._read_from[(tp.topic, tp.partition)]
            for tp in consumer.position(self._partitions)
        }

    def _lag(self, consumer: Consumer, ends: dict[tuple[str, int], int]) -> int:
        positions = self._positions(consumer)
        return sum(max(0, end - positions[key]) for key, end in ends.items())

    def _caught_up(self, consumer: Consumer) -> bool:
        self._behind = self._lag(consumer, self._targets)
        return self._behind == 0

    def _mark_ready(self, started_at: float) -> None:
        # Everything the topics held at the start is in: that is how fresh every entry is.
        model = self._model
        model.availability_caught_up = [started_at] * len(model.availability_caught_up)
        model.prices_caught_up = [started_at] * len(model.prices_caught_up)
        ENTRIES.set(model.entries)
        CATCH_UP_SECONDS.set(self.catch_up_s or 0.0)
        READY.set(1)
        self.ready.set()
        log.info("caught up", entries=model.entries, seconds=round(self.catch_up_s or 0.0, 2))

    def _refresh(self, consumer: Consumer) -> None:
        """Ask the broker for the end offsets: a partition whose end we hold was fresh when we
        asked. A broker that does not answer stamps nothing, so staleness grows meanwhile."""
        asked_at = self._now()
        try:
            ends = self._offsets(consumer, _LATEST, timeout_s=1)
        except KafkaException as exc:
            log.debug("end offsets unavailable", error=str(exc))
            ends = {}
        positions = self._positions(consumer)
        model = self._model
        stamps = {
            self._topics[0]: model.availability_caught_up,
            self._topics[1]: model.prices_caught_up,
        }
        behind = dict.fromkeys(self._topics, 0)
        for (topic, partition), end in ends.items():
            if end < 0:
                continue
            lag = max(0, end - positions[(topic, partition)])
            behind[topic] += lag
            if lag == 0:
                stamps[topic][partition] = asked_at
        for topic, lag in behind.items():
            LAG.labels(topic).set(lag)
        ENTRIES.set(model.entries)
        STALENESS.set(max(0.0, self._now() - model.oldest_catch_up()))

    def _apply(self, messages: Sequence[Message]) -> None:
        """Decode and apply a batch; the hot loop of a cold start (millions of messages)."""
        availability_topic = self._topics[0]
        decode_availability = self._decoders[availability_topic].decode
        decode_price = self._decoders[self._topics[1]].decode
        apply_availability = self._model.apply_availability
        apply_price = self._model.apply_price
        outcomes = {(topic, kept): 0 for topic in self._topics for kept in (True, False)}
        for message in messages:
            if message.error() is not None:
                log.warning("consumer error", error=str(message.error()))
                continue
            # A consumed message always has its topic and partition.
            topic: str = message.topic()  # type: ignore[assignment]
            partition: int = message.partition()  # type: ignore[assignment]
            value = message.value()
            if value is None:
                self._tombstone(topic, message.key())
                continue
            kept: bool | None
            try:
                if topic == availability_topic:
                    a = decode_availability(value).data
                    kept = apply_availability(
                        a.channel_id, a.sku, a.available, a.version, partition
                    )
                else:
                    p = decode_price(value).data
                    kept = apply_price(
                        p.channel_id,
                        p.sku,
                        p.version,
                        partition,
                        p.effective,
                        p.regular,
                        p.currency,
                        p.reduced,
                        p.lowest_30d,
                        p.valid_until,
                    )
            except (msgspec.ValidationError, msgspec.DecodeError):
                kept = self._slow_path(message, topic, partition)
                if kept is None:
                    continue
            outcomes[(topic, kept)] += 1
        for (topic, kept), count in outcomes.items():
            if count:
                EVENTS.labels(topic, "applied" if kept else "older").inc(count)

    def _slow_path(self, message: Message, topic: str, partition: int) -> bool | None:
        """A message the fast path refused, decoded again by the platform's decoder to say why:
        another event type (skipped), or a malformed message (logged and skipped: a read model
        has nowhere to dead-letter it). Returns whether it was kept, None if skipped."""
        try:
            event = self._diagnosis[topic].decode(message.value())
        except events.InvalidEvent as exc:
            EVENTS.labels(topic, "invalid").inc()
            log.warning(
                "invalid event skipped",
                topic=topic,
                partition=partition,
                offset=message.offset(),
                reason=str(exc),
            )
            return None
        if event is None:
            EVENTS.labels(topic, "ignored").inc()
            return None
        data = event.data
        if isinstance(data, AvailabilityChanged):
            return self._model.apply_availability(
                data.channel_id, data.sku, data.available, data.version, partition
            )
        assert isinstance(data, PriceChanged)
        return self._model.apply_price(
            data.channel_id,
            data.sku,
            data.version,
            partition,
            data.effective,
            data.regular,
            data.currency,
            data.reduced,
            data.lowest_30d,
            data.valid_until,
        )

    def _tombstone(self, topic: str, key: bytes | None) -> None:
        channel, _, sku = (key or b"").decode(errors="replace").partition(":")
        if topic == self._topics[0]:
            self._model.remove_availability(channel, sku)
        else:
            self._model.remove_price(channel, sku)

    def _now(self) -> float:
        return self._clock.now().timestamp()


def _return_freed_memory() -> None:
    """Give the heap freed by the catch-up back to the operating system. glibc keeps it
    otherwise (the fetch buffers were allocated in librdkafka's threads' arenas), and the
    replica would carry several hundred megabytes it no longer uses."""
    try:
        libc = ctypes.CDLL(None)
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return  # not glibc
    trim(0)
