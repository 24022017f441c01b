"""Pricing commands: import a price file into a running service, write a sample one."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import typer

from omnistock.platform.imports import client as import_client
from omnistock.platform.imports.client import FileFormat, console, format_of
from omnistock.platform.settings import get_settings

app = typer.Typer(
    help="Price files: import one into a running pricing service, or write a sample.",
    no_args_is_help=True,
    add_completion=False,
)


@app.command("import")
def import_prices(
    file: Annotated[
        Path,
        typer.Argument(exists=True, dir_okay=False, readable=True, help="CSV or JSON lines"),
    ],
    channel: Annotated[str, typer.Option(help="the channel whose price list to fill")],
    fmt: Annotated[
        FileFormat | None,
        typer.Option("--format", help="csv or jsonl; by default from the file's suffix"),
    ] = None,
    url: Annotated[str, typer.Option(help="the pricing service")] = "http://127.0.0.1:8000",
    token: Annotated[
        str | None,
        typer.Option(help="a bearer token with pricing:admin; by default a local one"),
    ] = None,
) -> None:
    """Stream a price file to POST /v1/price-lists/CHANNEL/imports and print what it did.
    Exits 1 when rows were rejected, 2 when the import did not run."""
    from omnistock.platform.auth import mint_token

    report = import_client.upload(
        file,
        f"{url.rstrip('/')}/v1/price-lists/{quote(channel, safe='')}/imports",
        media_type=import_client.MEDIA_TYPES[format_of(file, fmt)],
        token=token or mint_token(get_settings(), "omnistock-cli", ["pricing:admin"]),
    )
    print_report(report)
    if report["rejected"]:
        raise typer.Exit(1)


def print_report(report: dict[str, Any]) -> None:
    import_client.print_summary(
        report,
        f"{report['applied']:,} applied, {report['unchanged']:,} unchanged, "
        f"{report['rejected']:,} rejected; {report['published']:,} prices published",
    )


def sample_prices(skus: int, seed: int, sku_prefix: str) -> Iterator[tuple[str, str]]:
    """``skus`` SKUs, each with a price of 1.00 to 999.99; the same arguments give the same
    prices."""
    rng = random.Random(seed)
    width = len(str(skus - 1))
    for n in range(skus):
        cents = rng.randrange(100, 100_000)
        yield f"{sku_prefix}{n:0{width}d}", f"{cents // 100}.{cents % 100:02d}"


def _encoded(prices: Iterator[tuple[str, str]], fmt: FileFormat) -> Iterator[bytes]:
    if fmt is FileFormat.CSV:
        yield b"sku,price\n"
        for sku, price in prices:
            yield f"{sku},{price}\n".encode()
    else:
        for sku, price in prices:
            yield f'{{"sku":"{sku}","price":"{price}"}}\n'.encode()


@app.command("sample-prices")
def write_sample_prices(
    out: Annotated[Path, typer.Argument(dir_okay=False, help="the file to write")],
    skus: Annotated[int, typer.Option(min=1, help="how many SKUs (one row each)")] = 1000,
    fmt: Annotated[
        FileFormat | None,
        typer.Option("--format", help="csv or jsonl; by default from the file's suffix"),
    ] = None,
    seed: Annotated[int, typer.Option(help="the same seed writes the same file")] = 1,
    sku_prefix: Annotated[str, typer.Option(help="SKUs are this and a number")] = "SKU-",
) -> None:
    """Write a price file for tests, demos and benchmarks: one price per SKU, from the import's
    start."""
    import_client.write_lines(
        out, _encoded(sample_prices(skus, seed, sku_prefix), format_of(out, fmt))
    )
    console.print(f"wrote {skus:,} prices to {out}")
