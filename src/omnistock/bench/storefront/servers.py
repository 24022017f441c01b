"""The servers a run drives: the hello ceiling and ``omnistock serve`` processes."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from omnistock.bench.common import console

HOST = "127.0.0.1"
PORT = int(os.environ.get("OMNISTOCK_BENCH_PORT", "18090"))


async def hello_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The ceiling: an ASGI app that answers every request with the same five bytes."""
    if scope["type"] == "lifespan":
        while (message := await receive())["type"] != "lifespan.shutdown":
            await send({"type": message["type"] + ".complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    headers = [(b"content-type", b"text/plain"), (b"content-length", b"5")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"hello"})


def serve_hello(port: int) -> None:
    """The hello app on uvicorn, with the options ``omnistock serve`` runs every service with."""
    import uvicorn

    uvicorn.run(hello_app, host=HOST, port=port, log_level="warning", access_log=False)


def hello_command() -> list[str]:
    return [sys.executable, "-m", "omnistock.bench.storefront.servers", "hello", str(PORT)]


def serve_command(service: str, port: int = PORT, *options: str) -> list[str]:
    return [sys.executable, "-m", "omnistock.cli", "serve", service, "--port", str(port), *options]


@contextmanager
def process(name: str, command: list[str], env: dict[str, str] | None = None) -> Iterator[Any]:
    """A server process for the block; its log (warnings and errors only) in the temp folder."""
    log_path = Path(tempfile.gettempdir()) / f"omnistock-bench-storefront-{name}.log"
    with log_path.open("wb") as log:
        server = subprocess.Popen(
            command,
            env={**os.environ, "OMNISTOCK_LOG_LEVEL": "WARNING", **(env or {})},
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        try:
            yield server
        except BaseException:
            console.print(f"[red]the server's log: {log_path}")
            raise
        finally:
            server.terminate()
            server.wait(30)


async def wait_ready(url: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient() as client:
        while time.monotonic() < deadline:
            try:
                if (await client.get(url)).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.02)
    raise RuntimeError(f"{url} was not ready after {timeout_s} s")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    raise RuntimeError("no VmRSS in /proc")


def base_url() -> str:
    return f"http://{HOST}:{PORT}"


if __name__ == "__main__":
    if sys.argv[1:2] == ["hello"]:
        serve_hello(int(sys.argv[2]))
