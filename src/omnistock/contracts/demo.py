"""Events of the demo service, which shows the platform's event path end to end."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from omnistock.platform.events import event_type
from omnistock.platform.kafka import TopicSpec

PINGS = TopicSpec(
    "omnistock.demo.pings.v1",
    description="Pings sent through the demo service's outbox; keyed by ping stream.",
)


@event_type
@dataclass(frozen=True, slots=True)
class PingSent:
    """A client sent a ping; ``sequence`` counts pings within one ``stream``."""

    TYPE: ClassVar[str] = "omnistock.demo.ping-sent.v1"
    TOPIC: ClassVar[str] = PINGS.name

    ping_id: str
    stream: str
    sequence: int
    message: str
    sent_at_ns: int  # the sender's wall clock, for measuring commit-to-apply latency


TOPICS = [PINGS]
