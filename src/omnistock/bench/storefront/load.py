"""The load generator: vegeta, built from the Go module proxy on first use, and its attacks."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import orjson

from omnistock.bench.common import console
from omnistock.bench.storefront.servers import base_url
from omnistock.platform.auth import mint_token
from omnistock.platform.settings import Settings

VEGETA = "github.com/tsenart/vegeta/v12"
VEGETA_VERSION = "v12.13.0"
CONCURRENCY = 32  # connections of every phase
FIXED_RATE = 4000


def ensure_vegeta() -> Path:
    """vegeta from the Go module proxy, built once into the checkout's git-ignored cache."""
    cache = Path(__file__).resolve().parents[4] / ".cache" / "vegeta"
    binary = cache / VEGETA_VERSION / "vegeta"
    if binary.exists():
        return binary
    go = shutil.which("go")
    if go is None:
        raise SystemExit("the storefront benchmark builds vegeta with Go: install Go first")
    console.print(f"building vegeta {VEGETA_VERSION} into {binary.parent} (once)")
    env = {
        **os.environ,
        "GOBIN": str(binary.parent),
        "GOPATH": str(cache / "gopath"),
        "GOCACHE": str(cache / "gobuild"),
        "GOFLAGS": "-modcacherw",
    }
    subprocess.run([go, "install", f"{VEGETA}@{VEGETA_VERSION}"], env=env, check=True)
    return binary


class Loads:
    """Targets files and vegeta attacks: closed loop at full load, or a constant rate."""

    def __init__(self, vegeta: Path, folder: Path, settings: Settings, seconds: float) -> None:
        self._vegeta = vegeta
        self._folder = folder
        self._seconds = seconds
        self._token = mint_token(settings, "bench-storefront", ["storefront:read"], 24 * 3600)

    def targets(self, name: str, paths: list[str]) -> Path:
        """A targets file: GET requests of ``paths``, taken in turn."""
        file = self._folder / f"{name}.txt"
        file.write_text("\n\n".join(f"GET {base_url()}{path}" for path in paths) + "\n")
        return file

    def full(self, targets: Path) -> dict[str, float]:
        return self.attack(targets, rate=0)

    def attack(self, targets: Path, rate: int) -> dict[str, float]:
        """Requests/s answered 200 and latency percentiles of one attack of ``seconds``."""
        attack = [
            str(self._vegeta),
            "attack",
            f"-targets={targets}",
            f"-rate={rate}/1s" if rate else "-rate=0",
            f"-duration={self._seconds}s",
            f"-header=Authorization: Bearer {self._token}",
            "-http2=false",
            "-keepalive=true",
            "-max-body=0",
            "-timeout=10s",
            # A fixed pool of connections: past it the offered rate drops rather than the
            # generator opening connections without end.
            f"-workers={CONCURRENCY}",
            f"-max-workers={CONCURRENCY}",
        ]
        with subprocess.Popen(attack, stdout=subprocess.PIPE) as attacking:
            summary = subprocess.run(
                [str(self._vegeta), "report", "-type=json"],
                stdin=attacking.stdout,
                capture_output=True,
                check=True,
            )
        found = orjson.loads(summary.stdout)
        answered = found["status_codes"].get("200", 0)
        if answered < found["requests"]:
            console.print(f"[yellow]  not all answered 200: {found['status_codes']}")
        elapsed_s = found["duration"] / 1e9
        return {
            "rps": round(answered / elapsed_s, 1),
            "p50_ms": round(found["latencies"]["50th"] / 1e6, 2),
            "p99_ms": round(found["latencies"]["99th"] / 1e6, 2),
        }
