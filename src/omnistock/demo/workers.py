"""The demo's relay and consumer as separate OS processes, for benchmarks and crash tests that
need a real process to ``kill -9``."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
from multiprocessing.process import BaseProcess

from omnistock.contracts.demo import PINGS
from omnistock.demo import consumers
from omnistock.platform.settings import Settings

_spawn = multiprocessing.get_context("spawn")


def _serve_until_terminated(
    settings: Settings,
    schema: str,
    relay: bool,
    topic: str | None,
    group: str | None,
    env: dict[str, str],
) -> None:
    os.environ.update(env)
    from omnistock.platform.runtime import ServiceRuntime

    async def main() -> None:
        subscriptions = [consumers.subscription(group, topic or PINGS.name)] if group else []
        runtime = ServiceRuntime(
            "demo", settings, schema=schema, subscriptions=subscriptions, relay=relay
        )
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        async with runtime.lifespan():
            await stop.wait()

    asyncio.run(main())


def start_relay(settings: Settings, schema: str, env: dict[str, str] | None = None) -> BaseProcess:
    process = _spawn.Process(
        target=_serve_until_terminated,
        args=(settings, schema, True, None, None, env or {}),
        name=f"relay-{schema}",
        daemon=True,
    )
    process.start()
    return process


def start_consumer(
    settings: Settings, schema: str, topic: str, group: str, env: dict[str, str] | None = None
) -> BaseProcess:
    process = _spawn.Process(
        target=_serve_until_terminated,
        args=(settings, schema, False, topic, group, env or {}),
        name=f"consumer-{group}",
        daemon=True,
    )
    process.start()
    return process
