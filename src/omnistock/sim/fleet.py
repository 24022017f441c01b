"""Every omnistock service as a process of its own, on the local stack: started in order, each
on its own port and (by default) a schema and consumer groups of this run, so that a run starts
from nothing and leaves nothing behind. Any service can be killed with SIGKILL and started
again on the same port and schema, as a drill does."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import httpx
from confluent_kafka import Consumer, TopicPartition

from omnistock.contracts.inventory import ALLOCATIONS
from omnistock.contracts.orders import ORDERS
from omnistock.contracts.payments import PAYMENTS
from omnistock.contracts.topics import ALL_TOPICS
from omnistock.platform import db, kafka
from omnistock.platform.auth import mint_token
from omnistock.platform.children import die_with_parent, free_ports
from omnistock.platform.migrations import migrate, migrations_for
from omnistock.platform.settings import Settings
from omnistock.services import SERVICES as REGISTRY

SERVICES = (
    "inventory",
    "pricing",
    "payments",
    "orders",
    "storefront",
    "loyalty",
    "collection-points",
    "customer-sync",
)
PSP = "psp-sim"
# Consumer groups by setting: a run of its own reads the topics from the start of its run.
GROUPS = {
    "orders": ("OMNISTOCK_ORDERS_PAYMENTS_GROUP", "OMNISTOCK_ORDERS_FULFILMENT_GROUP"),
    "loyalty": ("OMNISTOCK_LOYALTY_ORDERS_GROUP",),
    "customer-sync": ("OMNISTOCK_CUSTOMER_SYNC_GROUP",),
}
# The topics each of those groups reads. A new group would start from the first offset (the
# services' setting), and these topics hold every earlier run's events: tens of thousands of
# other runs' orders to wade through before the first of this one.
GROUP_TOPICS = {
    "OMNISTOCK_ORDERS_PAYMENTS_GROUP": (PAYMENTS.name,),
    "OMNISTOCK_ORDERS_FULFILMENT_GROUP": (ALLOCATIONS.name,),
    "OMNISTOCK_LOYALTY_ORDERS_GROUP": (ORDERS.name,),
    "OMNISTOCK_CUSTOMER_SYNC_GROUP": (ORDERS.name, PAYMENTS.name),
}


@dataclass
class Member:
    """One process of the fleet."""

    name: str
    port: int
    command: list[str]
    env: dict[str, str]
    log: Path
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def spawn(self) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                self.command,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=die_with_parent,
            )
        self.starts += 1

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL: no goodbye, no flush, like a node lost."""
        if self.process is not None and self.alive():
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def stop(self, timeout_s: float = 20) -> None:
        if self.process is None or not self.alive():
            return
        self.process.terminate()
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()


@dataclass
class Fleet:
    settings: Settings
    run: str
    directory: Path
    fresh: bool = True
    psp: dict[str, str] = field(default_factory=dict)  # OMNISTOCK_PSP_SIM_* settings
    extra_env: dict[str, dict[str, str]] = field(default_factory=dict)
    members: dict[str, Member] = field(default_factory=dict)
    # A subset in dependency order, for a run that needs only some (orders needs inventory,
    # pricing and payments).
    services: tuple[str, ...] = SERVICES

    def schema(self, service: str) -> str:
        base = service.replace("-", "_")
        return f"sim_{self.run}_{base}" if self.fresh else base

    def group(self, setting: str) -> str:
        return f"omnistock.sim.{self.run}.{setting.lower()}"

    @property
    def urls(self) -> dict[str, str]:
        return {name: member.url for name, member in self.members.items()}

    def url(self, service: str) -> str:
        return self.members[service].url

    def token(self, subject: str, scopes: Sequence[str], ttl_s: int = 6 * 3600) -> str:
        return mint_token(self.settings, subject, list(scopes), ttl_s)

    def headers(self, subject: str, scopes: Sequence[str]) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(subject, scopes)}"}

    async def prepare(self) -> None:
        """Topics, and the run's schemas with every migration applied."""
        await asyncio.to_thread(kafka.ensure_topics, self.settings, ALL_TOPICS)
        dead_letters = [
            kafka.TopicSpec(kafka.dead_letter_topic(self.group(s)), partitions=1)
            for settings in GROUPS.values()
            for s in settings
        ]
        if self.fresh:
            await asyncio.to_thread(kafka.ensure_topics, self.settings, dead_letters)
            for setting, topics in GROUP_TOPICS.items():
                await asyncio.to_thread(self._start_at_the_end, self.group(setting), topics)
        for service in self.services:
            package = REGISTRY[service].package
            if not resources.files(package).joinpath("migrations").is_dir():
                continue  # a service with no database (the storefront's model is in memory)
            schema = self.schema(service)
            conn = await db.connect(self.settings.database_url, schema)
            try:
                await migrate(conn, schema, migrations_for(service, package))
            finally:
                await conn.close()

    def _start_at_the_end(self, group: str, topics: Sequence[str]) -> None:
        """Commit ``group``'s offsets where ``topics`` end now, before it first joins."""
        consumer = Consumer(kafka.consumer_config(self.settings, group))
        try:
            offsets = []
            for topic in topics:
                partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
                for partition in partitions:
                    _, end = consumer.get_watermark_offsets(
                        TopicPartition(topic, partition), timeout=10
                    )
                    offsets.append(TopicPartition(topic, partition, end))
            consumer.commit(offsets=offsets, asynchronous=False)
        finally:
            consumer.close()

    def _environment(self, service: str, urls: dict[str, str]) -> dict[str, str]:
        env = {**os.environ, "OMNISTOCK_LOG_LEVEL": "WARNING", "PYTHONUNBUFFERED": "1"}
        if service == "orders":
            env["OMNISTOCK_ORDERS_INVENTORY_URL"] = urls["inventory"]
            env["OMNISTOCK_ORDERS_PRICING_URL"] = urls["pricing"]
            env["OMNISTOCK_ORDERS_PAYMENTS_URL"] = urls["payments"]
            env["OMNISTOCK_ORDERS_LOYALTY_URL"] = urls["loyalty"]
        if service == "payments":
            env["OMNISTOCK_PAYMENTS_PSP_URL"] = urls[PSP]
        if service == PSP:
            env.update({f"OMNISTOCK_PSP_SIM_{k.upper()}": v for k, v in self.psp.items()})
        if self.fresh:
            for setting in GROUPS.get(service, ()):
                env[setting] = self.group(setting)
        env.update(self.extra_env.get(service, {}))
        return env

    def _command(self, service: str, port: int, urls: dict[str, str]) -> list[str]:
        cli = [sys.executable, "-m", "omnistock.cli"]
        if service == PSP:
            webhook = f"{urls['payments']}/v1/psp/webhooks"
            return [*cli, "payments", "psp-sim", "--port", str(port), "--webhook-url", webhook]
        return [*cli, "serve", service, "--port", str(port), "--schema", self.schema(service)]

    async def start(self) -> None:
        """Every service, started at once and waited for."""
        self.directory.mkdir(parents=True, exist_ok=True)
        await self.prepare()
        names = [PSP, *self.services]
        ports = dict(zip(names, free_ports(len(names)), strict=True))
        urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
        for name in names:
            member = Member(
                name,
                ports[name],
                self._command(name, ports[name], urls),
                self._environment(name, urls),
                self.directory / f"{name}.log",
            )
            self.members[name] = member
            member.spawn()
        await asyncio.gather(*(self.wait_ready(name) for name in self.services))

    async def wait_ready(self, name: str, timeout_s: float = 120) -> float:
        """Seconds until ``name`` answers ready (its database, broker and consumers up)."""
        member = self.members[name]
        started = time.monotonic()
        async with httpx.AsyncClient(timeout=2) as client:
            while time.monotonic() - started < timeout_s:
                if not member.alive():
                    raise RuntimeError(f"{name} exited; its log: {member.log}")
                try:
                    if (await client.get(f"{member.url}/readyz")).status_code == 200:
                        return time.monotonic() - started
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.1)
        raise TimeoutError(f"{name} not ready after {timeout_s:.0f} s; its log: {member.log}")

    def kill(self, name: str) -> None:
        self.members[name].kill()

    async def restart(self, name: str) -> float:
        """Start a stopped or killed member again on its port and schema; seconds to ready."""
        member = self.members[name]
        member.stop()
        member.spawn()
        if name == PSP:
            return 0.0
        return await self.wait_ready(name)

    def stop(self) -> None:
        for member in reversed(list(self.members.values())):
            member.stop()

    async def drop(self) -> None:
        """Forget the run: its schemas and dead-letter topics (only a fresh run's own)."""
        if not self.fresh:
            return
        conn = await db.connect(self.settings.database_url, "public")
        try:
            for service in self.services:
                await conn.execute(f"DROP SCHEMA IF EXISTS {self.schema(service)} CASCADE")
        finally:
            await conn.close()
        # Every topic left behind is loaded by the broker at each start: runs add up.
        dead_letters = [
            kafka.dead_letter_topic(self.group(s)) for settings in GROUPS.values() for s in settings
        ]
        await asyncio.to_thread(kafka.delete_topics, self.settings, dead_letters)

    async def connect(self, service: str) -> Any:
        """A database connection on ``service``'s schema (the invariant checker's view)."""
        return await db.connect(self.settings.database_url, self.schema(service))
