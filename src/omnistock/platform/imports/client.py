"""The command-line side of a bulk import: stream a file to a service's import endpoint with a
progress bar, print the rows it rejected, write sample files."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text

if TYPE_CHECKING:
    import httpx

console = Console(stderr=True)
# The report's lines are left whole, for reading and for grep, whatever the terminal's width.
report_console = Console(highlight=False, soft_wrap=True)

UPLOAD_CHUNK_BYTES = 256 * 1024
SHOWN_ERRORS = 20


class FileFormat(StrEnum):
    CSV = "csv"
    JSONL = "jsonl"


MEDIA_TYPES = {
    FileFormat.CSV: "text/csv; charset=utf-8",
    FileFormat.JSONL: "application/x-ndjson",
}
SUFFIXES = {".csv": FileFormat.CSV, ".jsonl": FileFormat.JSONL}


def format_of(path: Path, given: FileFormat | None) -> FileFormat:
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


def _file_chunks(path: Path, progress: Progress, task: TaskID) -> Iterator[bytes]:
    rows = 0
    with path.open("rb") as file:
        while chunk := file.read(UPLOAD_CHUNK_BYTES):
            yield chunk
            rows += chunk.count(b"\n")
            progress.update(task, advance=len(chunk), rows=rows)


def upload(
    file: Path,
    url: str,
    *,
    media_type: str,
    token: str,
    params: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """POST ``file`` to ``url`` as it is read, showing bytes and rows per second, and return the
    report the server answers with. When the import did not run, prints why and exits 2."""
    import httpx

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
                url,
                params=params,
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
    return report


def _print_problem(response: httpx.Response) -> None:
    try:
        problem = response.json()
        text = f"{problem.get('title', 'error')}: {problem.get('detail', '')}"
    except ValueError:
        text = response.text[:500]
    console.print(f"[red]HTTP {response.status_code}[/red] ", end="")
    console.print(text, markup=False)


def print_summary(report: Mapping[str, Any], counts: str) -> None:
    """The report's rows and rate, ``counts`` (what the service did with them), and the first
    rejected rows by line."""
    rate = report["rows"] / report["seconds"] if report["seconds"] else 0.0
    report_console.print(
        f"{report['rows']:,} rows in {report['seconds']:.1f} s ({rate:,.0f} rows/s): {counts}",
        markup=False,
    )
    errors = report["errors"]
    for error in errors[:SHOWN_ERRORS]:
        report_console.print(f"  line {error['line']}: {error['error']}", markup=False)
    if report["rejected"] > min(len(errors), SHOWN_ERRORS):
        more = report["rejected"] - min(len(errors), SHOWN_ERRORS)
        report_console.print(f"  … and {more:,} more rejected rows", markup=False)


def write_lines(path: Path, lines: Iterable[bytes], batch: int = 10_000) -> None:
    """Write encoded lines a batch at a time: quick for millions, and memory stays flat."""
    with path.open("wb") as file:
        pending: list[bytes] = []
        for line in lines:
            pending.append(line)
            if len(pending) >= batch:
                file.write(b"".join(pending))
                pending.clear()
        file.write(b"".join(pending))
