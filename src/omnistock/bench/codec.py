"""``omnistock bench codec``: why events are decoded with msgspec and not pydantic.

Decodes and validates the same CloudEvents envelope (payload included) both ways, in one run.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from pydantic import BaseModel

from omnistock.bench.common import report
from omnistock.contracts.demo import PingSent
from omnistock.platform import events
from omnistock.platform.clock import SystemClock


class _PingData(BaseModel):
    ping_id: str
    stream: str
    sequence: int
    message: str
    sent_at_ns: int


class _PydanticEnvelope(BaseModel):
    specversion: str
    id: str
    source: str
    type: str
    time: datetime
    subject: str = ""
    datacontenttype: str = "application/json"
    aggregateversion: int = 0
    correlationid: str = ""
    data: _PingData


def _per_second(decode: Any, raw: bytes, seconds: float) -> float:
    count, started = 0, time.perf_counter()
    deadline = started + seconds
    while time.perf_counter() < deadline:
        for _ in range(1000):
            decode(raw)
        count += 1000
    return count / (time.perf_counter() - started)


def run(*, as_json: bool, seconds: float) -> None:
    payload = PingSent(ping_id="0" * 36, stream="web", sequence=1, message="hi", sent_at_ns=1)
    _, raw = events.encode(
        payload, source="/bench", subject="web", time=SystemClock().now(), aggregate_version=1
    )
    decoder = events.EventDecoder(frozenset({PingSent.TYPE}))
    phase = max(1.0, seconds / 2)
    msgspec_rate = _per_second(decoder.decode, raw, phase)
    pydantic_rate = _per_second(_PydanticEnvelope.model_validate_json, raw, phase)
    report(
        {
            "bench": "codec",
            "envelope_bytes": len(raw),
            "msgspec_decodes_per_s": round(msgspec_rate),
            "pydantic_decodes_per_s": round(pydantic_rate),
            "ratio": round(msgspec_rate / pydantic_rate, 2),
        },
        as_json,
    )
