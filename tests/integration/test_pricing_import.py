"""Bulk import of base prices against the real database: good rows applied and published, bad
rows reported by line and left out, re-imports that change nothing, prices scheduled for later,
the HTTP endpoint, and the command line against a real server."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import uvicorn
from fastapi import FastAPI
from typer.testing import CliRunner

import omnistock.contracts  # noqa: F401 - registers the event types
from omnistock.contracts.pricing import PriceChanged
from omnistock.platform import db, events
from omnistock.platform.clock import Clock, ManualClock
from omnistock.platform.http import create_app
from omnistock.platform.imports import Format, split_lines
from omnistock.platform.runtime import ServiceRuntime
from omnistock.platform.settings import Settings
from omnistock.pricing import bulk, service
from omnistock.pricing.api import imports as imports_api
from omnistock.pricing.cli import app as pricing_cli
from tests.integration.conftest import bearer, create_service_schema, drop_schema, free_port, served

pytestmark = pytest.mark.integration
T0 = datetime(2026, 11, 27, 12, tzinfo=UTC)
CHANNEL = "brand-pl"


@dataclass
class Pricing:
    settings: Settings
    schema: str
    pool: asyncpg.Pool
    clock: ManualClock

    async def run(
        self, body: bytes, fmt: Format = "csv", chunk_rows: int = bulk.CHUNK_ROWS
    ) -> bulk.PriceImportReport:
        return await bulk.import_prices(
            self.pool, self.clock, CHANNEL, lines_of(body), fmt, chunk_rows=chunk_rows
        )

    async def base_prices(self) -> dict[tuple[str, datetime], int]:
        rows = await self.pool.fetch("SELECT sku, valid_from, amount FROM base_prices")
        return {(r["sku"], r["valid_from"]): r["amount"] for r in rows}

    async def published(self) -> list[PriceChanged]:
        """The price events in the outbox, oldest first (nothing relays them in these tests)."""
        rows = await self.pool.fetch("SELECT payload FROM outbox ORDER BY id")
        decoded = [events.decode(r["payload"]) for r in rows]
        return [e.data for e in decoded if e is not None and isinstance(e.data, PriceChanged)]

    async def effective_now(self) -> dict[str, int]:
        async with self.pool.acquire() as conn:
            _, found = await service.quotes(
                conn, CHANNEL, ["A-1", "B-2", "C-3", "D-4"], self.clock.now()
            )
        return {sku: quote.effective for sku, quote in found.items() if quote is not None}


async def _pieces(body: bytes, size: int) -> AsyncIterator[bytes]:
    """The body cut into small pieces, as a network delivers it."""
    for start in range(0, len(body), size):
        yield body[start : start + size]


def lines_of(body: bytes) -> AsyncIterator[bytes]:
    return split_lines(_pieces(body, 7))


@pytest.fixture
async def pricing(settings: Settings) -> AsyncIterator[Pricing]:
    schema = await create_service_schema(settings, "pricing", "omnistock.pricing")
    pool = await db.create_pool(settings.database_url, schema, min_size=1, max_size=4)
    try:
        async with pool.acquire() as conn:
            await service.put_price_list(conn, CHANNEL, "PLN", 2300)
        yield Pricing(settings, schema, pool, ManualClock(T0))
    finally:
        await pool.close()
        await drop_schema(settings, schema)


def errors_by_line(report: bulk.PriceImportReport) -> dict[int, str]:
    return {e.line: e.error for e in report.errors}


def counts(report: bulk.PriceImportReport) -> tuple[int, int, int, int, int]:
    return report.rows, report.applied, report.unchanged, report.rejected, report.published


async def test_good_csv_rows_are_applied_and_each_bad_row_is_reported_by_line(
    pricing: Pricing,
) -> None:
    report = await pricing.run(
        b"sku,price,valid_from\n"
        b"A-1,129.99,\n"  # line 2: from the import's start
        b"B-2,10,2026-01-01T00:00:00+01:00\n"
        b"bad sku!,5.00,\n"
        b",5.00,\n"
        b"C-3,12.5O,\n"
        b"C-3,-1.00,\n"
        b"C-3,1.00,2026-13-01T00:00:00Z\n"
        b"C-3,1.00,2026-12-01T00:00:00\n"
        b"A-1,99.00,2026-11-27T13:00:00+01:00\n"  # line 10: the start again, in Warsaw time
        b"C-3,1.005\n"
        b"C-3,1.005,\n"  # line 12: rounded half to even, 100.5 groszy → 100
    )
    assert errors_by_line(report) == {
        4: "sku 'bad sku!' is not a SKU (letters, digits, '.', '_', '-'; at most 64)",
        5: "sku '' is not a SKU (letters, digits, '.', '_', '-'; at most 64)",
        6: "price '12.5O' is not a decimal number (like 129.99)",
        7: "price '-1.00' is negative",
        8: "valid_from '2026-13-01T00:00:00Z' is not a time (ISO 8601 with a timezone)",
        9: "valid_from '2026-12-01T00:00:00' has no timezone",
        10: "sku 'A-1' from 2026-11-27T12:00:00+00:00 repeats line 2",
        11: "expected 3 fields, found 2",
    }
    assert counts(report) == (11, 3, 0, 8, 3)
    assert await pricing.base_prices() == {
        ("A-1", T0): 12_999,
        ("B-2", datetime(2025, 12, 31, 23, tzinfo=UTC)): 1_000,
        ("C-3", T0): 100,
    }
    assert await pricing.effective_now() == {"A-1": 12_999, "B-2": 1_000, "C-3": 100}
    published = await pricing.published()
    assert sorted((e.sku, e.effective, e.currency, e.version) for e in published) == [
        ("A-1", 12_999, "PLN", 1),
        ("B-2", 1_000, "PLN", 1),
        ("C-3", 100, "PLN", 1),
    ]


async def test_json_lines_take_prices_as_text_or_exact_numbers(pricing: Pricing) -> None:
    report = await pricing.run(
        b'{"sku": "A-1", "price": 129.99}\r\n'
        b'{"price": "19.99", "sku": "B-2", "valid_from": null}\r\n'
        b"\r\n"
        b'{"sku": "C-3", "price": 0.12500000000000000001, "valid_from": "2026-11-01T00:00Z"}\n'
        b'{"sku": "D-4", "price": true}\n'
        b'{"sku": "D-4", "price": -3}\n'
        b'{"sku": "D-4", "price": 3, "valid_from": 1764547200}\n'
        b'{"sku": "D-4", "price": 3, "currency": "EUR"}\n'
        b'{"sku": 4, "price": 3}\n'
        b'{"sku": "D-4", "price": 3,\n'
        b'{"sku": "C-3", "price": 1, "valid_from": "2026-11-01T01:00:00+01:00"}',
        "jsonl",
    )
    errors = errors_by_line(report)
    assert errors == {
        5: "price True is not a decimal number (like 129.99)",
        6: "price -3 is negative",
        7: "valid_from 1764547200 is not a time (ISO 8601 with a timezone)",
        8: "unknown field(s) 'currency'",
        9: "sku 4 is not a SKU (letters, digits, '.', '_', '-'; at most 64)",
        10: errors[10],
        11: "sku 'C-3' from 2026-11-01T00:00:00+00:00 repeats line 4",
    }
    assert errors[10].startswith("not valid JSON")
    assert counts(report) == (10, 3, 0, 7, 3)
    # 12.500000000000000001 groszy is 13, where a float would have made it 12.5 and then 12.
    assert await pricing.effective_now() == {"A-1": 12_999, "B-2": 1_999, "C-3": 13}


async def test_importing_the_same_file_again_changes_nothing_and_publishes_nothing(
    pricing: Pricing,
) -> None:
    body = b"sku,price,valid_from\nA-1,10.00,\nB-2,20.00,2026-11-01T00:00:00Z\nC-3,30.00,\n"
    first = await pricing.run(body)
    assert counts(first) == (3, 3, 0, 0, 3)
    stored = await pricing.pool.fetch("SELECT * FROM base_prices ORDER BY sku, valid_from")
    versions = await pricing.pool.fetch("SELECT * FROM published_prices ORDER BY sku")
    events_before = await pricing.pool.fetchval("SELECT count(*) FROM outbox")

    pricing.clock.advance(timedelta(hours=1))  # rows without a time would apply from now
    for again in (body, body.replace(b",10.00,", b",10,")):
        report = await pricing.run(again)
        assert counts(report) == (3, 0, 3, 0, 0)
    assert await pricing.pool.fetch("SELECT * FROM base_prices ORDER BY sku, valid_from") == stored
    assert await pricing.pool.fetch("SELECT * FROM published_prices ORDER BY sku") == versions
    assert await pricing.pool.fetchval("SELECT count(*) FROM outbox") == events_before

    changed = await pricing.run(body.replace(b"C-3,30.00", b"C-3,25.00"))
    assert counts(changed) == (3, 1, 2, 0, 1)
    (event,) = (await pricing.published())[3:]
    assert (event.sku, event.effective, event.version) == ("C-3", 2_500, 2)


async def test_a_price_from_a_later_instant_is_published_by_the_scheduler_when_it_comes(
    pricing: Pricing,
) -> None:
    report = await pricing.run(
        b"sku,price,valid_from\n"
        b"A-1,100.00,2026-11-01T00:00:00Z\n"
        b"A-1,80.00,2026-11-29T00:00:00+01:00\n"  # 23:00 UTC on the 28th
        b"B-2,50.00,\n"
        b"D-4,70.00,2026-11-28T12:00:00Z\n"  # D-4 has no price until then
    )
    assert counts(report) == (4, 4, 0, 0, 2)
    assert await pricing.effective_now() == {"A-1": 10_000, "B-2": 5_000}
    (a_now,) = [e for e in await pricing.published() if e.sku == "A-1"]
    assert (a_now.effective, a_now.valid_until) == (10_000, "2026-11-28T23:00:00+00:00")

    async def scheduler_step() -> int:
        async with pricing.pool.acquire() as conn, conn.transaction():
            return await service.publish_due(conn, pricing.clock)

    for due, sku, effective, version in (
        (datetime(2026, 11, 28, 12, tzinfo=UTC), "D-4", 7_000, 1),
        (datetime(2026, 11, 28, 23, tzinfo=UTC), "A-1", 8_000, 2),
    ):
        pricing.clock.set(due - timedelta(minutes=1))
        assert await scheduler_step() == 0
        pricing.clock.set(due)
        assert await scheduler_step() == 1
        assert await scheduler_step() == 0
        latest = (await pricing.published())[-1]
        assert (latest.sku, latest.effective, latest.version) == (sku, effective, version)
    assert len(await pricing.published()) == 4
    assert await pricing.effective_now() == {"A-1": 8_000, "B-2": 5_000, "D-4": 7_000}


async def test_chunks_catch_repeats_across_them_and_a_failure_keeps_the_chunks_before_it(
    pricing: Pricing,
) -> None:
    body = b"sku,price\nA-1,1\nB-2,2\nC-3,3\nA-1,4\nB-2,5\n"
    report = await pricing.run(body, chunk_rows=2)
    assert errors_by_line(report) == {
        5: "sku 'A-1' from 2026-11-27T12:00:00+00:00 repeats line 2",
        6: "sku 'B-2' from 2026-11-27T12:00:00+00:00 repeats line 3",
    }
    assert await pricing.effective_now() == {"A-1": 100, "B-2": 200, "C-3": 300}

    async def broken_off() -> AsyncIterator[bytes]:
        yield b"sku,price\nA-1,10\nB-2,20\nC-3,30\n"
        raise ConnectionResetError("the upload broke off")

    with pytest.raises(ConnectionResetError):
        await bulk.import_prices(
            pricing.pool, pricing.clock, CHANNEL, split_lines(broken_off()), "csv", chunk_rows=2
        )
    # A-1 and B-2 were a committed chunk; C-3 was in the chunk being filled.
    assert await pricing.effective_now() == {"A-1": 1_000, "B-2": 2_000, "C-3": 300}


async def test_an_unknown_price_list_is_refused_before_anything_is_read(pricing: Pricing) -> None:
    async def unread() -> AsyncIterator[bytes]:
        raise AssertionError("the file was read")
        yield b""

    with pytest.raises(service.NotFound):
        await bulk.import_prices(pricing.pool, pricing.clock, "brand-xx", unread(), "csv")


# Over HTTP: the endpoint alone, in an app of its own.


def import_app(settings: Settings, schema: str, clock: Clock) -> FastAPI:
    """The import endpoint on the test's schema; without a relay, events stay in the outbox."""
    runtime = ServiceRuntime("pricing", settings, schema=schema, relay=False)
    app = create_app(
        service="pricing",
        settings=settings,
        routers=[imports_api.router],
        lifespan=runtime.lifespan,
    )
    app.state.runtime = runtime
    app.state.clock = clock
    return app


async def test_the_endpoint_streams_a_file_in_and_answers_with_the_report(
    pricing: Pricing,
) -> None:
    app = import_app(pricing.settings, pricing.schema, pricing.clock)
    admin = bearer(pricing.settings, "erp", ["pricing:admin"])
    async with served(app, admin) as client:
        response = await client.post(
            f"/v1/price-lists/{CHANNEL}/imports",
            content=_pieces(b"sku,price\r\nA-1,129.99\r\nB-2,x\r\n", 5),
            headers={"Content-Type": "text/csv; charset=utf-8"},
        )
        assert response.status_code == 200, response.text
        report: dict[str, Any] = response.json()
        assert {k: v for k, v in report.items() if k != "seconds"} == {
            "channel_id": CHANNEL,
            "rows": 2,
            "applied": 1,
            "unchanged": 0,
            "rejected": 1,
            "published": 1,
            "errors": [{"line": 3, "error": "price 'x' is not a decimal number (like 129.99)"}],
            "errors_truncated": False,
        }
        refusals = {
            ("brand-xx", "text/csv", b"sku,price\nA-1,1\n"): (404, "not-found"),
            (CHANNEL, "application/json", b"sku,price\nA-1,1\n"): (415, "unsupported-media-type"),
            (CHANNEL, "text/csv", b"sku,amount\nA-1,1\n"): (422, "price-file-refused"),
            (CHANNEL, "application/x-ndjson", b"\xff"): (200, None),
        }
        for (channel, content_type, body), (status, problem) in refusals.items():
            response = await client.post(
                f"/v1/price-lists/{channel}/imports",
                content=body,
                headers={"Content-Type": content_type},
            )
            assert response.status_code == status, (channel, content_type, body)
            if problem is not None:
                assert response.headers["content-type"] == "application/problem+json"
                assert response.json()["type"] == f"urn:omnistock:problem:{problem}"
        writer = bearer(pricing.settings, "erp", ["pricing:write"])
        forbidden = await client.post(
            f"/v1/price-lists/{CHANNEL}/imports",
            content=b"sku,price\nA-1,1\n",
            headers={**writer, "Content-Type": "text/csv"},
        )
        assert forbidden.status_code == 403
    assert await pricing.effective_now() == {"A-1": 12_999}


# The command line against a real HTTP server.


@pytest.fixture
def server_url(pricing: Pricing) -> Iterator[str]:
    """The import endpoint served over TCP from a thread of its own, with its own event loop."""
    port = free_port()
    app = import_app(pricing.settings, pricing.schema, pricing.clock)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)


def test_the_cli_writes_a_sample_and_streams_it_to_the_endpoint(
    pricing: Pricing, server_url: str, tmp_path: Path
) -> None:
    runner = CliRunner()

    def run(path: Path, channel: str = CHANNEL, *more: str) -> Any:
        args = ["import", str(path), "--channel", channel, "--url", server_url, *more]
        return runner.invoke(pricing_cli, args)

    sample, again, jsonl = tmp_path / "prices.csv", tmp_path / "again.csv", tmp_path / "p.jsonl"
    for path in (sample, again, jsonl):
        written = runner.invoke(pricing_cli, ["sample-prices", str(path), "--skus", "3000"])
        assert written.exit_code == 0, written.output
    assert sample.read_bytes() == again.read_bytes(), "the same seed writes the same file"
    lines = sample.read_text().splitlines()
    assert (len(lines), lines[0], lines[1].split(",")[0]) == (3001, "sku,price", "SKU-0000")

    result = run(sample)
    assert result.exit_code == 0, result.output
    assert "3,000 rows in " in result.output
    assert ": 3,000 applied, 0 unchanged, 0 rejected; 3,000 prices published" in result.output
    result = run(jsonl)
    assert result.exit_code == 0, result.output
    assert ": 0 applied, 3,000 unchanged, 0 rejected; 0 prices published" in result.output
    with sample.open("a") as file:
        file.write("SKU-0000,-1\n")
    result = run(sample)
    assert result.exit_code == 1, result.output
    assert ": 0 applied, 3,000 unchanged, 1 rejected; 0 prices published" in result.output
    assert "line 3002: price '-1' is negative" in result.output

    async def stored() -> dict[str, str]:
        conn = await db.connect(pricing.settings.database_url, pricing.schema)
        try:
            rows = await conn.fetch("SELECT sku, amount FROM base_prices")
        finally:
            await conn.close()
        return {r["sku"]: f"{r['amount'] // 100}.{r['amount'] % 100:02d}" for r in rows}

    assert asyncio.run(stored()) == dict(line.split(",") for line in lines[1:])
    unauthorised = run(sample, CHANNEL, "--token", "x")
    assert (unauthorised.exit_code, "HTTP 401" in unauthorised.output) == (2, True)
    unknown = run(sample, "brand-xx")
    assert (unknown.exit_code, "HTTP 404" in unknown.output) == (2, True)
