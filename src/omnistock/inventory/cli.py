"""Inventory commands: import a stock snapshot into a running service, write a sample one."""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import orjson
import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text

from omnistock.platform.settings import get_settings

if TYPE_CHECKING:
    import httpx

app = typer.Typer(
    help="Stock snapshots: import one into a running inventory service, or write a sample.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console(stderr=True)
report_console = Console(highlight=False)

UPLOAD_CHUNK_BYTES = 256 * 1024
SHOWN_ERRORS = 20


class SnapshotFormat(StrEnum):
    CSV = "csv"
    JSONL = "jsonl"


MEDIA_TYPES = {
    SnapshotFormat.CSV: "text/csv; charset=utf-8",
    SnapshotFormat.JSONL: "application/x-ndjson",
}
SUFFIXES = {".csv": SnapshotFormat.CSV, ".jsonl": SnapshotFormat.JSONL}


def format_of(path: Path, given: SnapshotFormat | None) -> SnapshotFormat:
    if given is not None:
        return given
    if (found := SUFFIXES.get(path.suffix.lower())) is None:
        raise typer.BadParameter(
            f"cannot tell the format of {path.name} from its suffix", param_hint="--format"
        )
    return found


class RowsPerSecond(ProgressColumn):
    """Rows sent so far and their rate (the server applies them as it reads them)."""

    def render(self, task: Task) -> Text:
        rows: int = task.fields.get("rows", 0)
        rate = rows / task.elapsed if task.elapsed else 0.0
        return Text(f"{rows:,} rows · {rate:,.0f} rows/s", style="progress.data.speed")


def _file_chunks(path: Path, progress: Progress, task: Any) -> Iterator[bytes]:
    rows = 0
    with path.open("rb") as file:
        while chunk := file.read(UPLOAD_CHUNK_BYTES):
            yield chunk
            rows += chunk.count(b"\n")
            progress.update(task, advance=len(chunk), rows=rows)


@app.command("import")
def import_snapshot(
    file: Annotated[
        Path,
        typer.Argument(exists=True, dir_okay=False, readable=True, help="CSV or JSON lines"),
    ],
    fmt: Annotated[
        SnapshotFormat | None,
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
) -> None:
    """Stream a full stock snapshot to POST /v1/stock/bulk and print what it did. Exits 1 when
    rows were rejected, 2 when the import did not run."""
    import httpx

    from omnistock.platform.auth import mint_token

    media_type = MEDIA_TYPES[format_of(file, fmt)]
    token = token or mint_token(get_settings(), "omnistock-cli", ["inventory:write"])
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        RowsPerSecond(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console) as progress:
        task = progress.add_task(file.name, total=file.stat().st_size, rows=0)
        try:
            response = httpx.post(
                f"{url.rstrip('/')}/v1/stock/bulk",
                params={"source": source or file.name[:100]},
                content=_file_chunks(file, progress, task),
                headers={"Content-Type": media_type, "Authorization": f"Bearer {token}"},
                # The answer comes once the last chunk is applied: no read timeout.
                timeout=httpx.Timeout(30.0, read=None),
            )
        except httpx.HTTPError as exc:
            console.print(f"[red]the import did not complete: {exc!r}")
            raise typer.Exit(2) from None
    if response.status_code != 200:
        _print_problem(response)
        raise typer.Exit(2)
    report: dict[str, Any] = response.json()
    print_report(report)
    if report["rejected"]:
        raise typer.Exit(1)


def _print_problem(response: httpx.Response) -> None:
    try:
        problem = response.json()
        text = f"{problem.get('title', 'error')}: {problem.get('detail', '')}"
    except ValueError:
        text = response.text[:500]
    console.print(f"[red]HTTP {response.status_code}[/red] ", end="")
    console.print(text, markup=False)


def print_report(report: dict[str, Any]) -> None:
    rate = report["rows"] / report["seconds"] if report["seconds"] else 0.0
    report_console.print(
        f"{report['rows']:,} rows in {report['seconds']:.1f} s ({rate:,.0f} rows/s): "
        f"{report['applied']:,} applied, {report['unchanged']:,} unchanged, "
        f"{report['rejected']:,} rejected; {report['shortages']:,} below held stock "
        "(holds released)",
        markup=False,
    )
    errors = report["errors"]
    for error in errors[:SHOWN_ERRORS]:
        report_console.print(f"  line {error['line']}: {error['error']}", markup=False)
    if report["rejected"] > min(len(errors), SHOWN_ERRORS):
        more = report["rejected"] - min(len(errors), SHOWN_ERRORS)
        report_console.print(f"  … and {more:,} more rejected rows", markup=False)


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


def _encoded(items: Iterator[tuple[str, str, int]], fmt: SnapshotFormat) -> Iterator[bytes]:
    if fmt is SnapshotFormat.CSV:
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
        SnapshotFormat | None,
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
    encoded = _encoded(items, format_of(out, fmt))
    with out.open("wb") as file:
        batch: list[bytes] = []
        for line in encoded:
            batch.append(line)
            if len(batch) >= 10_000:
                file.write(b"".join(batch))
                batch.clear()
        file.write(b"".join(batch))
    console.print(f"wrote {rows:,} rows at {len(wanted)} location(s) to {out}")
