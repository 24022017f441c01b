"""Orders commands: the orders whose saga is stuck."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Annotated

import orjson
import typer

from omnistock.orders import SERVICE, service
from omnistock.platform import db
from omnistock.platform.clock import SystemClock
from omnistock.platform.settings import get_settings

app = typer.Typer(
    help="Orders: the saga's stuck steps.", no_args_is_help=True, add_completion=False
)


@app.command()
def stuck(
    older_than: Annotated[
        float, typer.Option(help="seconds an order has been in its current step")
    ] = 300,
    schema: Annotated[str, typer.Option(help="the service's schema")] = SERVICE,
    limit: Annotated[int, typer.Option(help="at most this many, longest stuck first")] = 100,
) -> None:
    """List orders stuck in a saga step (or its compensation) longer than --older-than, one
    JSON object a line: the step, its tries and the last error."""

    async def main() -> None:
        conn = await db.connect(get_settings().database_url, db.checked_identifier(schema))
        try:
            found = await service.stuck_orders(
                conn, SystemClock(), timedelta(seconds=older_than), limit
            )
        finally:
            await conn.close()
        for order in found:
            typer.echo(orjson.dumps(order).decode())

    asyncio.run(main())
