"""Inventory commands: import a stock snapshot into a running service, write a sample one."""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer

from omnistock.platform.imports import client as import_client
from omnistock.platform.imports.client import FileFormat, console, format_of
from omnistock.platform.settings import get_settings

app = typer.Typer(
    help="Stock snapshots: import one into a running inventory service, or write a sample.",
    no_args_is_help=True,
    add_completion=False,
)


@app.command("import")
def import_snapshot(
    file: Annotated[
        Path,
        typer.Argument(exists=True, dir_okay=False, readable=True, help="CSV or JSON lines"),
    ],
    fmt: Annotated[
        FileFormat | None,
        typer.Option("--format", help="csv or jsonl; by default from the file's suffix"),
    ] = None,
    url: Annotated[str, typer.Option(help="the inventory service")] = "http://127.0.0.1:8000",
    source: Annotated[
        str | None,
        typer.Option(help="the system the snapshot comes from; by default the file's name"),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(help="a bearer token with inventory:write; by default a local one"),
    ] = None,
    as_of: Annotated[
        str | None,
        typer.Option(
            "--as-of",
            help="when the snapshot was counted (ISO 8601 with offset): what moved since is "
            "kept on top of it; by default it counts as of now",
        ),
    ] = None,
) -> None:
    """Stream a full stock snapshot to POST /v1/stock/bulk and print what it did. Exits 1 when
    rows were rejected, 2 when the import did not run."""
    from omnistock.platform.auth import mint_token

    report = import_client.upload(
        file,
        f"{url.rstrip('/')}/v1/stock/bulk",
        media_type=import_client.MEDIA_TYPES[format_of(file, fmt)],
        token=token or mint_token(get_settings(), "omnistock-cli", ["inventory:write"]),
        params={
            "source": source or file.name[:100],
            **({"as_of": as_of} if as_of is not None else {}),
        },
    )
    print_report(report)
    if report["rejected"]:
        raise typer.Exit(1)


def print_report(report: dict[str, Any]) -> None:
    stale = f"{report['stale']:,} counted again since, " if report.get("as_of") else ""
    import_client.print_summary(
        report,
        f"{report['applied']:,} applied, {report['unchanged']:,} unchanged, {stale}"
        f"{report['rejected']:,} rejected; {report['shortages']:,} below held stock "
        "(holds released)",
    )


def sample_rows(
    rows: int, locations: Sequence[str], seed: int, max_on_hand: int, sku_prefix: str
) -> Iterator[tuple[str, str, int]]:
    """``rows`` items, SKU by SKU and each SKU at every location in turn; the same arguments
    give the same rows."""
    rng = random.Random(seed)
    width = len(str(max(rows // len(locations), 1)))
    for n in range(rows):
        sku_number, location = divmod(n, len(locations))
        sku = f"{sku_prefix}{sku_number:0{width}d}"
        yield sku, locations[location], rng.randint(0, max_on_hand)


def _encoded(items: Iterator[tuple[str, str, int]], fmt: FileFormat) -> Iterator[bytes]:
    if fmt is FileFormat.CSV:
        yield b"sku,location_id,on_hand\n"
        for sku, location_id, on_hand in items:
            yield f"{sku},{location_id},{on_hand}\n".encode()
    else:
        for sku, location_id, on_hand in items:
            line = {"sku": sku, "location_id": location_id, "on_hand": on_hand}
            yield orjson.dumps(line) + b"\n"


@app.command("sample-snapshot")
def sample_snapshot(
    out: Annotated[Path, typer.Argument(dir_okay=False, help="the file to write")],
    locations: Annotated[
        list[str], typer.Option(help="location ids (they must exist): comma-separated or repeated")
    ],
    rows: Annotated[int, typer.Option(min=1, help="how many rows")] = 1000,
    fmt: Annotated[
        FileFormat | None,
        typer.Option("--format", help="csv or jsonl; by default from the file's suffix"),
    ] = None,
    seed: Annotated[int, typer.Option(help="the same seed writes the same file")] = 1,
    max_on_hand: Annotated[int, typer.Option(min=0, help="counts are 0 to this")] = 50,
    sku_prefix: Annotated[str, typer.Option(help="SKUs are this and a number")] = "SKU-",
) -> None:
    """Write a snapshot for tests and demos: SKU by SKU, each at every location given."""
    wanted = [name.strip() for item in locations for name in item.split(",") if name.strip()]
    if not wanted:
        raise typer.BadParameter("name at least one location", param_hint="--locations")
    items = sample_rows(rows, wanted, seed, max_on_hand, sku_prefix)
    import_client.write_lines(out, _encoded(items, format_of(out, fmt)))
    console.print(f"wrote {rows:,} rows at {len(wanted)} location(s) to {out}")
