"""Bulk import of a stock snapshot against the real database: rows applied through the ledger,
bad rows reported by line and left out, re-imports that change nothing, shortages, and the CLI
against a real server process."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from typer.testing import CliRunner

from omnistock.inventory import bulk
from omnistock.inventory.cli import app as inventory_cli
from omnistock.platform import db
from omnistock.platform.auth import mint_token
from omnistock.platform.settings import Settings
from tests.integration.conftest import (
    create_service_schema,
    drop_schema,
    free_port,
    serve,
    wait_ready,
)
from tests.integration.inventory_in_process import Inventory, inventory_in_process, put_network

pytestmark = pytest.mark.integration

CSV = "text/csv"
JSONL = "application/x-ndjson"


@pytest.fixture
async def inventory(settings: Settings) -> AsyncIterator[Inventory]:
    async with inventory_in_process(settings) as inventory:
        yield inventory


async def assert_ledger_sums_to_on_hand(pool: asyncpg.Pool) -> None:
    ledger = await pool.fetch(
        "SELECT sku, location_id, sum(quantity) AS total FROM stock_movements GROUP BY 1, 2"
    )
    stock = await pool.fetch("SELECT sku, location_id, on_hand FROM stock")
    sums = {(r["sku"], r["location_id"]): r["total"] for r in ledger if r["total"]}
    on_hand = {(r["sku"], r["location_id"]): r["on_hand"] for r in stock if r["on_hand"]}
    assert on_hand, "an empty stock proves nothing"
    assert sums == on_hand


def csv_body(*rows: str, header: str = "sku,location_id,on_hand") -> bytes:
    return "\n".join([header, *rows, ""]).encode()


def errors_by_line(report: dict[str, Any]) -> dict[int, str]:
    return {e["line"]: e["error"] for e in report["errors"]}


async def test_a_csv_snapshot_is_applied_through_the_ledger_with_its_events(
    inventory: Inventory,
) -> None:
    counted = await inventory.client.put(
        "/v1/stock/wh-1/A-1",
        json={"on_hand": 10, "source": "wms", "sequence": 1},
        headers=inventory.token("inventory:write"),
    )
    assert counted.status_code == 200
    report = await inventory.imported(
        csv_body("A-1,wh-1,4", "A-1,store-1,0", "B-2,wh-1,7", "B-2,store-1,3")
    )
    assert {k: report[k] for k in ("rows", "applied", "unchanged", "rejected", "shortages")} == {
        "rows": 4,
        "applied": 3,
        "unchanged": 1,
        "rejected": 0,
        "shortages": 0,
    }
    assert report["errors"] == []
    assert await inventory.stock() == {
        ("A-1", "wh-1"): 4,
        ("B-2", "wh-1"): 7,
        ("B-2", "store-1"): 3,
    }
    movements = await inventory.pool.fetch(
        "SELECT sku, location_id, quantity, source, reference FROM stock_movements"
        " WHERE reason = 'import'"
    )
    assert {(m["sku"], m["location_id"]): m["quantity"] for m in movements} == {
        ("A-1", "wh-1"): -6,
        ("B-2", "wh-1"): 7,
        ("B-2", "store-1"): 3,
    }
    assert {(m["source"], m["reference"]) for m in movements} == {("erp", report["import_id"])}
    await assert_ledger_sums_to_on_hand(inventory.pool)
    moved = [
        e["data"] for e in await inventory.events("stock-moved") if e["data"]["reason"] == "import"
    ]
    assert sorted((m["sku"], m["location_id"], m["quantity"], m["on_hand"]) for m in moved) == [
        ("A-1", "wh-1", -6, 4),
        ("B-2", "store-1", 3, 3),
        ("B-2", "wh-1", 7, 7),
    ]
    latest = {
        e["data"]["sku"]: e["data"]["available"]
        for e in await inventory.events("availability-changed")
    }
    assert latest == {"A-1": 4, "B-2": 10}
    shown = await inventory.client.get(
        "/v1/channels/brand-pl/availability",
        params={"skus": "A-1,B-2"},
        headers=inventory.token("inventory:read"),
    )
    assert shown.json()["available"] == {"A-1": 4, "B-2": 10}


async def _pieces(body: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start : start + size]
        await asyncio.sleep(0)


async def test_a_jsonl_snapshot_streams_in_pieces_with_crlf_and_no_final_newline(
    inventory: Inventory,
) -> None:
    body = (
        b'{"sku":"J-1","location_id":"wh-1","on_hand":5}\r\n'
        b'{"sku":"J-2","location_id":"store-1","on_hand":2}\r\n'
        b"\r\n"
        b'{"on_hand":1,"location_id":"wh-1","sku":"J-3"}\r\n'
        b'{"sku":"J-4","location_id":"nowhere","on_hand":1}'
    )
    response = await inventory.bulk(_pieces(body, 7), JSONL)
    assert response.status_code == 200, response.text
    report = response.json()
    assert (report["rows"], report["applied"], report["rejected"]) == (4, 3, 1)
    assert errors_by_line(report) == {5: "location_id 'nowhere' is not a known location"}
    assert await inventory.stock() == {
        ("J-1", "wh-1"): 5,
        ("J-2", "store-1"): 2,
        ("J-3", "wh-1"): 1,
    }
    again = await inventory.imported(
        b'{"sku":"J-1","location_id":"wh-1","on_hand":6}', "application/jsonl"
    )
    assert again["applied"] == 1
    assert (await inventory.stock())[("J-1", "wh-1")] == 6


async def test_bad_csv_rows_are_reported_by_line_and_only_the_good_rows_are_applied(
    inventory: Inventory,
) -> None:
    report = await inventory.imported(
        csv_body(
            "GOOD-1,wh-1,5",  # line 2
            "bad sku!,wh-1,5",
            "C-4,nowhere,5",
            "C-5,wh-1,-1",
            "C-6,wh-1,2.5",
            "C-7,wh-1,ten",
            "GOOD-1,wh-1,6",  # line 8: the same item again
            "C-9,wh-1,1,extra",
            "C-10,wh-1",
            "C-11,wh-1,10000001",
            '"GOOD-12","store-1","9"',
            "C-13,store-1,0",
        )
    )
    errors = errors_by_line(report)
    assert sorted(errors) == [3, 4, 5, 6, 7, 8, 9, 10, 11]
    assert "is not a SKU" in errors[3]
    assert "not a known location" in errors[4]
    assert "negative" in errors[5]
    assert "not an integer" in errors[6]
    assert "not an integer" in errors[7]
    assert errors[8] == "sku 'GOOD-1' at 'wh-1' repeats line 2"
    assert errors[9] == "expected 3 fields, found 4"
    assert errors[10] == "expected 3 fields, found 2"
    assert "above the limit" in errors[11]
    assert (report["rows"], report["applied"], report["unchanged"], report["rejected"]) == (
        12,
        2,
        1,
        9,
    )
    assert await inventory.stock() == {("GOOD-1", "wh-1"): 5, ("GOOD-12", "store-1"): 9}
    assert await inventory.pool.fetchval("SELECT count(*) FROM stock_movements") == 2
    await assert_ledger_sums_to_on_hand(inventory.pool)


async def test_bad_jsonl_rows_are_reported_by_line_and_only_the_good_rows_are_applied(
    inventory: Inventory,
) -> None:
    lines = [
        '{"sku":"J-1","location_id":"wh-1","on_hand":3}',
        '{"sku":"J-2","location_id":"wh-1","on_hand":',
        '{"sku":"J-3","location_id":"wh-1","on_hand":"4"}',
        '{"sku":"J-4","location_id":"wh-1","on_hand":4.0}',
        '{"sku":"J-5","location_id":"wh-1","on_hand":true}',
        '{"sku":"J-6","location_id":"wh-1"}',
        '{"sku":"J-7","location_id":"wh-1","on_hand":1,"price":3}',
        '["J-8","wh-1",1]',
        '{"sku":"J-1","location_id":"wh-1","on_hand":4}',
        '{"sku":"J-10","location_id":"store-1","on_hand":-2}',
        '{"sku":"J-11\\n","location_id":"store-1","on_hand":2}',
        '{"sku":"J-12","location_id":"store-1","on_hand":2}',
    ]
    report = await inventory.imported("\n".join(lines).encode(), JSONL)
    errors = errors_by_line(report)
    assert sorted(errors) == list(range(2, 12))
    assert errors[2].startswith("not valid JSON")
    assert errors[3] == "on_hand '4' is not an integer"
    assert errors[4] == "on_hand 4.0 is not an integer"
    assert errors[5] == "on_hand True is not an integer"
    assert errors[6] == "missing field(s) 'on_hand'"
    assert errors[7] == "unknown field(s) 'price'"
    assert errors[8].startswith("expected a JSON object")
    assert errors[9] == "sku 'J-1' at 'wh-1' repeats line 1"
    assert errors[10] == "on_hand -2 is negative"
    assert "is not a SKU" in errors[11]
    assert await inventory.stock() == {("J-1", "wh-1"): 3, ("J-12", "store-1"): 2}
    await assert_ledger_sums_to_on_hand(inventory.pool)


async def test_importing_the_same_snapshot_again_changes_nothing(inventory: Inventory) -> None:
    body = csv_body("R-1,wh-1,4", "R-1,store-1,2", "R-2,wh-1,9", "R-3,store-1,0")
    first = await inventory.imported(body)
    assert first["applied"] == 3
    before = await inventory.stock()
    movements = await inventory.pool.fetchval("SELECT count(*) FROM stock_movements")
    events = await inventory.pool.fetchval("SELECT count(*) FROM outbox")
    versions = await inventory.pool.fetch("SELECT sku, location_id, version FROM stock")
    second = await inventory.imported(body)
    assert (second["applied"], second["unchanged"], second["rejected"]) == (0, 4, 0)
    assert await inventory.stock() == before
    assert await inventory.pool.fetchval("SELECT count(*) FROM stock_movements") == movements
    assert await inventory.pool.fetchval("SELECT count(*) FROM outbox") == events
    assert await inventory.pool.fetch("SELECT sku, location_id, version FROM stock") == versions


async def test_a_snapshot_below_held_stock_releases_the_reservation_and_reports_a_shortage(
    inventory: Inventory,
) -> None:
    counted = await inventory.client.put(
        "/v1/stock/wh-1/S-1",
        json={"on_hand": 5, "source": "erp", "sequence": 7},
        headers=inventory.token("inventory:write"),
    )
    assert counted.json()["status"] == "applied"
    reserved = await inventory.client.post(
        "/v1/reservations",
        json={"channel_id": "brand-pl", "lines": [{"sku": "S-1", "quantity": 4}]},
        headers={**inventory.token("inventory:reserve"), "Idempotency-Key": "checkout-1"},
    )
    assert reserved.status_code == 201, reserved.text
    reservation_id = reserved.json()["reservation_id"]
    report = await inventory.imported(csv_body("S-1,wh-1,2", "T-1,wh-1,6"))
    assert (report["applied"], report["shortages"], report["rejected"]) == (2, 1, 0)
    status = await inventory.pool.fetchval(
        "SELECT status FROM reservations WHERE reservation_id = $1", reservation_id
    )
    assert status == "released"
    level = await inventory.pool.fetchrow(
        "SELECT on_hand, reserved FROM stock WHERE sku = 'S-1' AND location_id = 'wh-1'"
    )
    assert (level["on_hand"], level["reserved"]) == (2, 0)
    assert (await inventory.stock())[("T-1", "wh-1")] == 6
    (shortage,) = await inventory.events("stock-shortage")
    assert shortage["subject"] == "S-1@wh-1"
    assert shortage["data"]["reservation_ids"] == [reservation_id]
    (released,) = await inventory.events("reservation-released")
    assert released["data"]["reason"] == "shortage"
    await assert_ledger_sums_to_on_hand(inventory.pool)
    # The import counted under a source of its own: the ERP's own sequence still moves on.
    later = await inventory.client.put(
        "/v1/stock/wh-1/S-1",
        json={"on_hand": 3, "source": "erp", "sequence": 8},
        headers=inventory.token("inventory:write"),
    )
    assert later.json() == {"status": "applied", "last_sequence": 8, "on_hand": 3}


async def test_a_wrong_content_type_or_header_is_refused_and_changes_nothing(
    inventory: Inventory,
) -> None:
    for content_type in ("application/json", "text/plain", "text/csv; charset=latin-1"):
        response = await inventory.bulk(csv_body("X-1,wh-1,1"), content_type)
        assert response.status_code == 415, content_type
        assert response.headers["content-type"] == "application/problem+json"
    refusals = {
        b"sku,location_id,on_hand,price\nX-1,wh-1,1,9\n": "unknown column(s) 'price'",
        b"X-1,wh-1,1\nX-2,wh-1,1\n": "unknown column(s) 'X-1', 'wh-1', '1'",
        b"sku,location_id,sku\nX-1,wh-1,1\n": "column(s) 'sku' repeated",
        b"sku,on_hand\nX-1,1\n": "missing column(s) 'location_id'",
        b"": "line 1 must be the CSV header",
    }
    for body, message in refusals.items():
        response = await inventory.bulk(body)
        assert response.status_code == 422, body
        assert message in response.json()["detail"], body
    assert await inventory.stock() == {}
    missing_source = await inventory.client.post(
        "/v1/stock/bulk",
        content=csv_body("X-1,wh-1,1"),
        headers={**inventory.token("inventory:write"), "Content-Type": CSV},
    )
    assert missing_source.status_code == 422
    assert missing_source.json()["errors"][0]["field"] == "query.source"
    reordered = await inventory.imported(b"\xef\xbb\xbfon_hand ,location_id,sku\r\n3,wh-1,X-1\r\n")
    assert reordered["applied"] == 1
    assert await inventory.stock() == {("X-1", "wh-1"): 3}


async def test_reported_errors_are_capped_but_all_are_counted(inventory: Inventory) -> None:
    rows = [f"E-{n},nowhere,1" for n in range(1500)]
    report = await inventory.imported(csv_body(*rows, "E-good,wh-1,1"))
    assert report["rejected"] == 1500
    assert report["errors_truncated"] is True
    assert [e["line"] for e in report["errors"]] == list(range(2, 1002))
    assert await inventory.stock() == {("E-good", "wh-1"): 1}


async def _lines(*lines: str, fail_after: int | None = None) -> AsyncIterator[bytes]:
    for number, line in enumerate(lines, start=1):
        if fail_after is not None and number > fail_after:
            raise ConnectionResetError("the upload broke off")
        yield line.encode() + b"\n"


async def test_repeats_are_caught_across_chunks(inventory: Inventory) -> None:
    lines = ["sku,location_id,on_hand", "A,wh-1,1", "B,wh-1,2", "C,wh-1,3", "A,wh-1,9", "B,wh-1,8"]
    report = await bulk.import_snapshot(
        inventory.pool, inventory.clock, _lines(*lines), "csv", "erp", chunk_rows=2
    )
    assert {e.line: e.error for e in report.errors} == {
        5: "sku 'A' at 'wh-1' repeats line 2",
        6: "sku 'B' at 'wh-1' repeats line 3",
    }
    assert await inventory.stock() == {("A", "wh-1"): 1, ("B", "wh-1"): 2, ("C", "wh-1"): 3}


async def test_a_failure_mid_file_keeps_the_committed_chunks_and_a_second_run_completes(
    inventory: Inventory,
) -> None:
    lines = ["sku,location_id,on_hand", *(f"F-{n},wh-1,{n}" for n in range(1, 7))]
    with pytest.raises(ConnectionResetError):
        await bulk.import_snapshot(
            inventory.pool,
            inventory.clock,
            _lines(*lines, fail_after=6),
            "csv",
            "erp",
            chunk_rows=2,
        )
    # Rows 1-4 were in committed chunks; row 5 was in the chunk being filled.
    assert await inventory.stock() == {(f"F-{n}", "wh-1"): n for n in range(1, 5)}
    await assert_ledger_sums_to_on_hand(inventory.pool)
    report = await bulk.import_snapshot(
        inventory.pool, inventory.clock, _lines(*lines), "csv", "erp", chunk_rows=2
    )
    assert (report.applied, report.unchanged) == (2, 4)
    assert await inventory.stock() == {(f"F-{n}", "wh-1"): n for n in range(1, 7)}
    await assert_ledger_sums_to_on_hand(inventory.pool)


# The command line against a real server process.


async def _ready_with_locations(settings: Settings, base_url: str) -> None:
    await wait_ready(base_url)
    token = mint_token(settings, "admin", ["inventory:admin"])
    async with httpx.AsyncClient(base_url=base_url) as client:
        await put_network(client, {"Authorization": f"Bearer {token}"})


@pytest.fixture
def server_url(settings: Settings) -> Iterator[tuple[str, str]]:
    schema = asyncio.run(create_service_schema(settings, "inventory", "omnistock.inventory"))
    port = free_port()
    process = serve("inventory", schema, port)
    base_url = f"http://127.0.0.1:{port}"
    try:
        asyncio.run(_ready_with_locations(settings, base_url))
        yield base_url, schema
    finally:
        process.terminate()
        process.wait(30)
        asyncio.run(drop_schema(settings, schema))


def test_the_cli_writes_a_sample_and_streams_it_to_the_server(
    settings: Settings, server_url: tuple[str, str], tmp_path: Path
) -> None:
    base_url, schema = server_url
    runner = CliRunner()
    sample, again = tmp_path / "snapshot.csv", tmp_path / "again.csv"
    for path in (sample, again):
        written = runner.invoke(
            inventory_cli,
            ["sample-snapshot", str(path), "--rows", "3000", "--locations", "wh-1,store-1"],
        )
        assert written.exit_code == 0, written.output
    assert sample.read_bytes() == again.read_bytes(), "the same seed writes the same file"
    lines = sample.read_text().splitlines()
    assert lines[:3] == ["sku,location_id,on_hand", lines[1], lines[2]]
    assert (len(lines), lines[1].split(",")[1], lines[2].split(",")[1]) == (3001, "wh-1", "store-1")
    with sample.open("a") as file:
        file.write("bad sku!,wh-1,1\n")
    result = runner.invoke(inventory_cli, ["import", str(sample), "--url", base_url])
    assert result.exit_code == 1, result.output
    expected = {
        (sku, location): int(on_hand)
        for sku, location, on_hand in (line.split(",") for line in lines[1:])
        if on_hand != "0"
    }
    assert "3,001 rows in " in result.output
    summary = f": {len(expected):,} applied, {3000 - len(expected):,} unchanged, 1 rejected;"
    assert summary in result.output
    assert "line 3002: sku 'bad sku!' is not a SKU" in result.output

    async def stored() -> dict[tuple[str, str], int]:
        pool = await db.create_pool(settings.database_url, schema, min_size=1, max_size=1)
        try:
            rows = await pool.fetch("SELECT sku, location_id, on_hand FROM stock WHERE on_hand > 0")
            await assert_ledger_sums_to_on_hand(pool)
        finally:
            await pool.close()
        return {(r["sku"], r["location_id"]): r["on_hand"] for r in rows}

    assert asyncio.run(stored()) == expected
    refused = runner.invoke(
        inventory_cli, ["import", str(sample), "--url", base_url, "--token", "x"]
    )
    assert refused.exit_code == 2
    assert "HTTP 401" in refused.output
    # The same file as of an hour ago: nothing moved the items since, except this very import,
    # which counted them after that moment: every one of them is stale.
    hour_ago = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    result = runner.invoke(
        inventory_cli, ["import", str(sample), "--url", base_url, "--as-of", hour_ago]
    )
    assert result.exit_code == 1, result.output
    assert f": 0 applied, {3000 - len(expected):,} unchanged, {len(expected):,} counted again " in (
        " ".join(result.output.split())
    )
    assert asyncio.run(stored()) == expected


async def test_a_snapshot_as_of_a_past_moment_keeps_what_moved_since(
    inventory: Inventory,
) -> None:
    write = inventory.token("inventory:write")

    async def count(sku: str, on_hand: int, sequence: int) -> None:
        response = await inventory.client.put(
            f"/v1/stock/wh-1/{sku}",
            json={"on_hand": on_hand, "source": "till", "sequence": sequence},
            headers=write,
        )
        assert response.json()["status"] == "applied", response.text

    async def sell(sku: str, units: int) -> None:
        response = await inventory.client.post(
            f"/v1/stock/wh-1/{sku}/adjustments",
            json={"quantity": -units, "reason": "store_sale"},
            headers={**write, "Idempotency-Key": f"sale-{sku}"},
        )
        assert response.status_code == 201, response.text

    async def bulk(as_of: str) -> httpx.Response:
        return await inventory.client.post(
            "/v1/stock/bulk",
            params={"source": "wms", "as_of": as_of},
            content=csv_body("A-1,wh-1,8", "A-2,wh-1,9", "A-3,wh-1,2", "A-4,wh-1,5"),
            headers={**write, "Content-Type": CSV},
        )

    for sku, on_hand in (("A-1", 10), ("A-2", 10), ("A-3", 4)):
        await count(sku, on_hand, 1)
    inventory.clock.advance(timedelta(minutes=5))
    as_of = inventory.clock.now()  # the WMS counts now; its file arrives an hour later
    inventory.clock.advance(timedelta(minutes=5))
    await sell("A-1", 3)
    await count("A-2", 7, 2)  # counted again after the snapshot: the later count stands
    await sell("A-3", 3)
    inventory.clock.advance(timedelta(hours=1))

    first = await bulk(as_of.isoformat())
    assert first.status_code == 200, first.text
    report = first.json()
    assert (report["applied"], report["stale"], report["rejected"]) == (2, 1, 1), report
    assert "short" in errors_by_line(report)[4]  # 2 counted, 3 sold since
    stock = await inventory.stock()
    # two went missing before the count, and the three sold after it stay sold.
    assert stock[("A-1", "wh-1")] == 5
    assert stock[("A-2", "wh-1")] == 7
    assert stock[("A-3", "wh-1")] == 1
    assert stock[("A-4", "wh-1")] == 5
    await assert_ledger_sums_to_on_hand(inventory.pool)

    # Again: the import's own movements count as of the snapshot, so nothing is stale but A-2.
    again = (await bulk(as_of.isoformat())).json()
    assert (again["applied"], again["unchanged"], again["stale"], again["rejected"]) == (
        0,
        2,
        1,
        1,
    ), again
    assert await inventory.stock() == stock

    movements = await inventory.pool.fetchval("SELECT count(*) FROM stock_movements")
    for bad, message in (
        ((inventory.clock.now() + timedelta(minutes=5)).isoformat(), "is in the future"),
        ("2026-03-02T09:00:00", "needs a UTC offset (e.g. 2026-03-02T03:00:00Z)"),
    ):
        refused = await bulk(bad)
        assert refused.status_code == 422
        assert refused.json()["errors"] == [{"field": "query.as_of", "message": message}]
    assert await inventory.pool.fetchval("SELECT count(*) FROM stock_movements") == movements
    assert await inventory.stock() == stock
    # A sender's clock a little ahead of ours: taken as now.
    skewed = await bulk((inventory.clock.now() + timedelta(seconds=30)).isoformat())
    assert skewed.status_code == 200, skewed.text
    assert datetime.fromisoformat(skewed.json()["as_of"]) == inventory.clock.now()


async def test_a_large_import_leaves_the_planner_statistics_of_what_it_filled(
    inventory: Inventory,
) -> None:
    async def counted_rows() -> float:
        tuples: float = await inventory.pool.fetchval(
            """SELECT reltuples FROM pg_class
               WHERE relname = 'stock' AND relnamespace = current_schema()::regnamespace"""
        )
        return tuples

    assert await counted_rows() < 0  # never analyzed: the planner would guess
    report = await inventory.imported(csv_body(*(f"P-{n},wh-1,{n + 1}" for n in range(300))))
    assert report["applied"] == 300
    assert await counted_rows() == 300
    # A few rows more change a tenth of nothing: no new ANALYZE for them.
    await inventory.imported(csv_body("P-1,wh-1,99", "Q-1,wh-1,1"))
    assert await counted_rows() == 300


async def test_snapshots_count_as_of_when_they_were_taken_not_when_they_arrived(
    inventory: Inventory,
) -> None:
    write = inventory.token("inventory:write")

    async def bulk(as_of: datetime, on_hand: int) -> dict[str, Any]:
        response = await inventory.client.post(
            "/v1/stock/bulk",
            params={"source": "wms", "as_of": as_of.isoformat()},
            content=csv_body(f"B-1,wh-1,{on_hand}"),
            headers={**write, "Content-Type": CSV},
        )
        assert response.status_code == 200, response.text
        report: dict[str, Any] = response.json()
        return report

    early = inventory.clock.now()
    inventory.clock.advance(timedelta(hours=2))
    later = inventory.clock.now()
    inventory.clock.advance(timedelta(hours=4))
    # The early snapshot arrives first, the later one after it: the later count stands.
    assert (await bulk(early, 10))["applied"] == 1
    inventory.clock.advance(timedelta(minutes=5))
    assert (await bulk(later, 7))["applied"] == 1
    assert (await inventory.stock())[("B-1", "wh-1")] == 7
    # The early one sent again, after the later one: counted before it, so stale.
    inventory.clock.advance(timedelta(minutes=5))
    assert (await bulk(early, 10))["stale"] == 1
    assert (await inventory.stock())[("B-1", "wh-1")] == 7
    await assert_ledger_sums_to_on_hand(inventory.pool)


async def test_a_snapshot_as_of_a_past_moment_below_held_stock_keeps_what_moved_since(
    inventory: Inventory,
) -> None:
    write = inventory.token("inventory:write")
    counted = await inventory.client.put(
        "/v1/stock/wh-1/H-1",
        json={"on_hand": 10, "source": "till", "sequence": 1},
        headers=write,
    )
    assert counted.json()["status"] == "applied"
    reserved = await inventory.client.post(
        "/v1/reservations",
        json={"channel_id": "brand-pl", "lines": [{"sku": "H-1", "quantity": 6}]},
        headers={**inventory.token("inventory:reserve"), "Idempotency-Key": "hold-h1"},
    )
    assert reserved.status_code == 201, reserved.text
    inventory.clock.advance(timedelta(minutes=5))
    as_of = inventory.clock.now()
    inventory.clock.advance(timedelta(minutes=5))
    sold = await inventory.client.post(
        "/v1/stock/wh-1/H-1/adjustments",
        json={"quantity": -2, "reason": "store_sale"},
        headers={**write, "Idempotency-Key": "sale-h1"},
    )
    assert sold.status_code == 201, sold.text
    # Counted 5 then, 2 sold since: 3 left, below the 6 held.
    response = await inventory.client.post(
        "/v1/stock/bulk",
        params={"source": "wms", "as_of": as_of.isoformat()},
        content=csv_body("H-1,wh-1,5"),
        headers={**write, "Content-Type": CSV},
    )
    report = response.json()
    assert (report["applied"], report["shortages"], report["rejected"]) == (1, 1, 0), report
    level = await inventory.pool.fetchrow(
        "SELECT on_hand, reserved FROM stock WHERE sku = 'H-1' AND location_id = 'wh-1'"
    )
    assert (level["on_hand"], level["reserved"]) == (3, 0)
    count = await inventory.pool.fetchrow(
        "SELECT counted_at FROM stock_movements WHERE sku = 'H-1' AND reason = 'count' "
        "AND source LIKE 'import:%'"
    )
    assert count["counted_at"] == as_of
    await assert_ledger_sums_to_on_hand(inventory.pool)
