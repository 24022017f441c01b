"""customer-sync commands: rebuild the view from the start of the topics; its digest."""

from __future__ import annotations

import asyncio
from typing import Annotated

import orjson
import typer

from omnistock.customer_sync import SERVICE, rebuild
from omnistock.customer_sync.settings import CustomerSyncSettings
from omnistock.platform import db
from omnistock.platform.settings import get_settings

app = typer.Typer(
    help="customer-sync: rebuild the apps' view from the topics.",
    no_args_is_help=True,
    add_completion=False,
)
SCHEMA = "customer_sync"


@app.command("rebuild")
def rebuild_view(
    schema: Annotated[str, typer.Option(help="the service's schema")] = SCHEMA,
) -> None:
    """Forget the view and have the service read its topics again from the start (run with the
    service stopped; it rebuilds the view as it starts). Notifications already recorded are
    kept, so none is sent twice."""
    settings, own = get_settings(), CustomerSyncSettings()

    async def main() -> None:
        conn = await db.connect(settings.database_url, db.checked_identifier(schema))
        try:
            await rebuild.forget(conn, own.group)
        finally:
            await conn.close()

    asyncio.run(main())
    partitions = rebuild.rewind(settings, own.group, own.topics)
    typer.echo(f"{SERVICE}: view dropped, {partitions} partitions rewound; start the service")


@app.command()
def digest(schema: Annotated[str, typer.Option(help="the service's schema")] = SCHEMA) -> None:
    """Print the view's fingerprint and size as JSON: equal digests, equal views."""

    async def main() -> tuple[str, int]:
        conn = await db.connect(get_settings().database_url, db.checked_identifier(schema))
        try:
            from omnistock.customer_sync import repository

            return await repository.digest(conn)
        finally:
            await conn.close()

    value, entries = asyncio.run(main())
    typer.echo(orjson.dumps({"digest": value, "entries": entries}).decode())
