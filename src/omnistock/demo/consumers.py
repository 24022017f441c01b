"""The demo's consumer: applies PingSent events into pongs, once each."""

from __future__ import annotations

from omnistock.contracts.demo import PINGS, PingSent
from omnistock.demo import service
from omnistock.platform.consumer import Subscription

GROUP = "omnistock.demo.pongs"


def subscription(group: str = GROUP, topic: str = PINGS.name) -> Subscription:
    return Subscription(group=group, topics=[topic], handlers={PingSent.TYPE: service.apply_pings})


def subscriptions() -> list[Subscription]:
    return [subscription()]
