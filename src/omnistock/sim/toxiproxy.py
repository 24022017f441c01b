"""Network faults between the services and PostgreSQL or Kafka: a Toxiproxy server of the run
(built from the Go module proxy on first use into the checkout's ``.cache/``), the proxies the
services reach the database and the broker through, and the toxics a drill puts on them:
latency, connections reset, a link cut or a black hole.

Kafka needs more than a proxy in front of the bootstrap address: a client asks the broker for
its address after bootstrapping and connects there directly. The local stack's broker has a
second listener (``OMNISTOCK_KAFKA_PROXIED_PORT``) that advertises the proxy's address
(``OMNISTOCK_KAFKA_PROXY_PORT``), so clients that bootstrap through the proxy stay behind it."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from omnistock.platform.children import die_with_parent

TOXIPROXY = "github.com/Shopify/toxiproxy/v2/cmd/server"
TOXIPROXY_VERSION = "v2.5.0"
KAFKA_PROXIED_PORT = int(os.environ.get("OMNISTOCK_KAFKA_PROXIED_PORT", "19094"))
KAFKA_PROXY_PORT = int(os.environ.get("OMNISTOCK_KAFKA_PROXY_PORT", "19095"))


class ToxiproxyUnavailable(RuntimeError):
    pass


def ensure_toxiproxy() -> Path:
    """toxiproxy-server, built once into the checkout's git-ignored cache."""
    cache = Path(__file__).resolve().parents[3] / ".cache" / "toxiproxy"
    binary = cache / TOXIPROXY_VERSION / "server"
    if binary.exists():
        return binary
    go = shutil.which("go")
    if go is None:
        raise ToxiproxyUnavailable("the network faults build Toxiproxy with Go: install Go first")
    env = {
        **os.environ,
        "GOBIN": str(binary.parent),
        "GOPATH": str(cache / "gopath"),
        "GOCACHE": str(cache / "gobuild"),
        "GOFLAGS": "-modcacherw",
    }
    subprocess.run([go, "install", f"{TOXIPROXY}@{TOXIPROXY_VERSION}"], env=env, check=True)
    return binary


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex((host, port)) == 0


def kafka_proxiable(bootstrap: str) -> str | None:
    """Why the broker's traffic cannot go through a proxy of this run, if it cannot."""
    host, _, _ = bootstrap.partition(":")
    if "," in bootstrap or host not in ("127.0.0.1", "localhost"):
        return "the broker is not the local stack's (only its broker has a proxied listener)"
    if not port_open(KAFKA_PROXIED_PORT):
        return (
            f"the broker has no proxied listener on 127.0.0.1:{KAFKA_PROXIED_PORT} "
            "(it was started before ops/stack/kafka.sh had one: restart it)"
        )
    if port_open(KAFKA_PROXY_PORT):
        return f"127.0.0.1:{KAFKA_PROXY_PORT} is taken (another drill's proxy?)"
    return None


def through(database_url: str, port: int) -> str:
    """``database_url`` with its address replaced by the proxy's on 127.0.0.1."""
    parts = urlsplit(database_url)
    credentials = parts.netloc.rpartition("@")[0]
    netloc = f"{credentials}@127.0.0.1:{port}" if credentials else f"127.0.0.1:{port}"
    return urlunsplit(parts._replace(netloc=netloc))


def upstream_of(database_url: str) -> str:
    parts = urlsplit(database_url)
    return f"{parts.hostname or '127.0.0.1'}:{parts.port or 5432}"


@dataclass
class Link:
    """One proxy: the services connect to ``listen``, the proxy to ``upstream``."""

    name: str
    listen_port: int
    upstream: str

    @property
    def listen(self) -> str:
        return f"127.0.0.1:{self.listen_port}"


@dataclass
class Toxiproxy:
    """A toxiproxy-server process and its HTTP API; every fault it injects is undone by
    ``heal``, and the process goes with ``stop``."""

    binary: Path
    log: Path
    api_port: int = 0
    links: dict[str, Link] = field(default_factory=dict)
    _process: subprocess.Popen[bytes] | None = None
    _client: httpx.AsyncClient | None = None

    @property
    def api(self) -> httpx.AsyncClient:
        if self._client is None:
            raise ToxiproxyUnavailable("Toxiproxy is not started")
        return self._client

    async def start(self, timeout_s: float = 20) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.api_port = probe.getsockname()[1]
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self._process = await asyncio.to_thread(self._spawn)
        self._client = httpx.AsyncClient(base_url=f"http://127.0.0.1:{self.api_port}", timeout=5)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise ToxiproxyUnavailable(f"toxiproxy-server exited; its log: {self.log}")
            try:
                if (await self.api.get("/version")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)
        raise ToxiproxyUnavailable(f"toxiproxy-server did not answer; its log: {self.log}")

    def _spawn(self) -> subprocess.Popen[bytes]:
        with self.log.open("ab") as out:
            return subprocess.Popen(
                [str(self.binary), "-host", "127.0.0.1", "-port", str(self.api_port)],
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=die_with_parent,
            )

    async def add(self, name: str, upstream: str, listen_port: int = 0) -> Link:
        """A proxy to ``upstream``, listening on ``listen_port`` (any free port: 0)."""
        body = {"name": name, "listen": f"127.0.0.1:{listen_port}", "upstream": upstream}
        answer = await self.api.post("/proxies", json=body)
        self._checked(answer, f"proxy {name}")
        listen = answer.json()["listen"]
        link = Link(name, int(listen.rpartition(":")[2]), upstream)
        self.links[name] = link
        return link

    async def toxic(
        self, link: str, kind: str, attributes: dict[str, Any], stream: str = "downstream"
    ) -> str:
        """Put a toxic of ``kind`` on ``link``; its name, to remove it."""
        name = f"{kind}-{stream}"
        body = {"name": name, "type": kind, "stream": stream, "attributes": attributes}
        self._checked(await self.api.post(f"/proxies/{link}/toxics", json=body), name)
        return name

    async def cut(self, link: str) -> None:
        """Close the link's connections and refuse new ones, as a firewall would."""
        self._checked(await self.api.post(f"/proxies/{link}", json={"enabled": False}), link)

    async def heal(self, link: str) -> None:
        """The link as it was: open, with no toxics."""
        self._checked(await self.api.post(f"/proxies/{link}", json={"enabled": True}), link)
        toxics = await self.api.get(f"/proxies/{link}/toxics")
        self._checked(toxics, link)
        for toxic in toxics.json():
            answer = await self.api.delete(f"/proxies/{link}/toxics/{toxic['name']}")
            if answer.status_code not in (204, 404):
                self._checked(answer, toxic["name"])

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(10)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
        self.stop()

    @staticmethod
    def _checked(answer: httpx.Response, what: str) -> None:
        if answer.status_code >= 300:
            raise ToxiproxyUnavailable(f"{what}: {answer.status_code} {answer.text[:300]}")
