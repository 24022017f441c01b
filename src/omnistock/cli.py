"""omnistock: one command for the stack, migrations, topics, tokens, services and benchmarks."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from omnistock.customer_sync import cli as customer_sync_cli
from omnistock.inventory import cli as inventory_cli
from omnistock.orders import cli as orders_cli
from omnistock.payments import cli as payments_cli
from omnistock.platform.settings import get_settings
from omnistock.pricing import cli as pricing_cli

app = typer.Typer(help=__doc__, no_args_is_help=True, add_completion=False)
app.add_typer(inventory_cli.app, name="inventory", help="Stock snapshots: import, sample.")
app.add_typer(pricing_cli.app, name="pricing", help="Price files: import, sample.")
app.add_typer(payments_cli.app, name="payments", help="The simulated PSP.")
app.add_typer(orders_cli.app, name="orders", help="Orders: stuck sagas.")
app.add_typer(customer_sync_cli.app, name="customer-sync", help="The apps' view: rebuild, digest.")
console = Console(stderr=True)


def repo_root() -> Path:
    root = Path(__file__).resolve().parents[2]
    if not (root / "ops" / "stack.sh").exists():
        console.print("[red]the stack commands need a source checkout of omnistock (ops/stack.sh)")
        raise typer.Exit(2)
    return root


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def stack(
    ctx: typer.Context,
    action: Annotated[str, typer.Argument(help="up | down | status | env | start | stop | kill")],
) -> None:
    """Install (when missing) and run the local PostgreSQL, Kafka and MariaDB."""
    script = repo_root() / "ops" / "stack.sh"
    result = subprocess.run(["bash", str(script), action, *ctx.args], check=False)
    raise typer.Exit(result.returncode)


def _service_names(services: list[str] | None) -> list[str]:
    from omnistock.services import SERVICES

    names = services or list(SERVICES)
    unknown = [name for name in names if name not in SERVICES]
    if unknown:
        console.print(
            f"[red]unknown service(s): {', '.join(unknown)}; known: {', '.join(SERVICES)}"
        )
        raise typer.Exit(2)
    return names


@app.command()
def migrate(
    services: Annotated[list[str] | None, typer.Argument(help="services to migrate (all)")] = None,
    schema: Annotated[str | None, typer.Option(help="apply into this schema instead")] = None,
) -> None:
    """Apply pending SQL migrations, one schema per service."""
    from importlib import resources

    from omnistock.platform import db
    from omnistock.platform.migrations import migrate as run
    from omnistock.platform.migrations import migrations_for
    from omnistock.services import SERVICES

    async def main() -> None:
        for name in _service_names(services):
            info = SERVICES[name]
            if not resources.files(info.package).joinpath("migrations").is_dir():
                console.print(f"{name}: no database")
                continue
            target = schema or info.schema
            conn = await db.connect(get_settings().database_url, target)
            try:
                applied = await run(conn, target, migrations_for(name, info.package))
            finally:
                await conn.close()
            status = ", ".join(applied) if applied else "up to date"
            console.print(f"{name} [dim]({target})[/dim]: {status}")

    asyncio.run(main())


@app.command()
def topics(
    delete: Annotated[bool, typer.Option(help="delete omnistock's topics instead")] = False,
) -> None:
    """Create omnistock's topics (partitions, replication, compaction); existing ones are kept."""
    from omnistock.contracts import ALL_TOPICS
    from omnistock.platform.kafka import delete_topics, ensure_topics

    settings = get_settings()
    if delete:
        delete_topics(settings, [spec.name for spec in ALL_TOPICS])
        console.print(f"deleted {len(ALL_TOPICS)} topics")
        return
    for name, outcome in ensure_topics(settings, ALL_TOPICS).items():
        console.print(f"{name}: {outcome}")


@app.command()
def token(
    scope: Annotated[list[str], typer.Option(help="a scope; repeat for several")],
    subject: Annotated[str, typer.Option(help="the client id")] = "local-client",
    customer: Annotated[
        str | None, typer.Option(help="a customer id: mints a customer token")
    ] = None,
    ttl: Annotated[int, typer.Option(help="lifetime in seconds")] = 3600,
) -> None:
    """Mint a locally signed bearer token (HS256 with OMNISTOCK_JWT_SECRET)."""
    from omnistock.platform.auth import CUSTOMER_SCOPE, mint_token

    scopes = [s for item in scope for s in item.split()]
    if customer is not None:
        subject = customer
        scopes = sorted({*scopes, CUSTOMER_SCOPE})
    print(mint_token(get_settings(), subject, scopes, ttl))


@app.command()
def serve(
    service: Annotated[str, typer.Argument(help="the service to run")],
    port: Annotated[int | None, typer.Option(help="HTTP port")] = None,
    host: Annotated[str | None, typer.Option(help="HTTP host")] = None,
    schema: Annotated[str | None, typer.Option(help="the service's schema")] = None,
) -> None:
    """Run a service: its HTTP API, outbox relay and consumers, until SIGTERM."""
    import uvicorn

    from omnistock.platform import observability
    from omnistock.services import SERVICES

    settings = get_settings()
    (name,) = _service_names([service])
    bind = host or settings.http_host
    refusal = settings.refusal_to_serve(bind) or SERVICES[name].refusal_to_serve(bind)
    if refusal:
        console.print(f"[red]{refusal}")
        raise typer.Exit(2)
    observability.configure(name, settings.log_level, settings.log_json)
    uvicorn.run(
        SERVICES[name].build_app(schema=schema),
        host=bind,
        port=port or settings.http_port,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=20,
    )


@app.command()
def worker(
    service: Annotated[str, typer.Argument(help="the service whose workers to run")],
    relay: Annotated[bool, typer.Option(help="run the outbox relay")] = True,
    consumers: Annotated[bool, typer.Option(help="run the consumers")] = True,
    schema: Annotated[str | None, typer.Option(help="the service's schema")] = None,
) -> None:
    """Run a service's outbox relay and consumers without the HTTP API."""
    from omnistock.platform import observability
    from omnistock.platform.runtime import ServiceRuntime
    from omnistock.services import SERVICES

    settings = get_settings()
    (name,) = _service_names([service])
    observability.configure(name, settings.log_level, settings.log_json)
    info = SERVICES[name]

    async def main() -> None:
        runtime = ServiceRuntime(
            name,
            settings,
            schema=schema or info.schema,
            subscriptions=info.load_subscriptions() if consumers else [],
            relay=relay,
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        async with runtime.lifespan():
            print("ready", flush=True)
            await stop.wait()

    asyncio.run(main())


@app.command()
def openapi(
    service: Annotated[str, typer.Argument(help="the service")],
    output: Annotated[Path | None, typer.Option(help="write here instead of stdout")] = None,
) -> None:
    """Print a service's OpenAPI document."""
    import orjson

    from omnistock.services import SERVICES

    (name,) = _service_names([service])
    spec = SERVICES[name].build_app().openapi()
    text = orjson.dumps(spec, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode()
    if output:
        output.write_text(text + "\n")
    else:
        print(text)


@app.command()
def contracts(
    output: Annotated[Path, typer.Option(help="folder for the AsyncAPI document")] = Path("docs"),
) -> None:
    """Write the AsyncAPI document of every topic and event type."""
    import orjson

    from omnistock.contracts.asyncapi import asyncapi_document

    output.mkdir(parents=True, exist_ok=True)
    path = output / "asyncapi.json"
    path.write_bytes(orjson.dumps(asyncapi_document(), option=orjson.OPT_INDENT_2) + b"\n")
    console.print(f"wrote {path}")


outbox_app = typer.Typer(
    help="Events Kafka refused for good, set aside by the relay.", no_args_is_help=True
)
app.add_typer(outbox_app, name="outbox")


@outbox_app.command("dead")
def outbox_dead(
    service: Annotated[str, typer.Argument(help="the service whose outbox to look at")],
    schema: Annotated[str | None, typer.Option(help="the service's schema")] = None,
) -> None:
    """List the events set aside, and why; exits 1 when there are any."""
    from rich.table import Table

    from omnistock.platform import db
    from omnistock.services import SERVICES

    (name,) = _service_names([service])

    async def main() -> list[Any]:
        conn = await db.connect(get_settings().database_url, schema or SERVICES[name].schema)
        try:
            rows: list[Any] = await conn.fetch(
                """SELECT id, event_id, topic, message_key, length(payload) AS bytes, reason,
                          failed_at FROM outbox_dead ORDER BY id"""
            )
            return rows
        finally:
            await conn.close()

    rows = asyncio.run(main())
    table = Table(title=f"{name}: {len(rows)} events set aside")
    for column in ("id", "topic", "key", "bytes", "reason", "failed at"):
        table.add_column(column)
    for r in rows:
        table.add_row(
            str(r["id"]),
            r["topic"],
            r["message_key"],
            str(r["bytes"]),
            r["reason"],
            r["failed_at"].isoformat(),
        )
    Console().print(table)
    if rows:
        raise typer.Exit(1)


@outbox_app.command("requeue")
def outbox_requeue(
    service: Annotated[str, typer.Argument(help="the service whose outbox to requeue")],
    ids: Annotated[
        list[int] | None, typer.Option("--id", help="only these (all by default)")
    ] = None,
    schema: Annotated[str | None, typer.Option(help="the service's schema")] = None,
) -> None:
    """Put set-aside events back in the outbox once the cause is fixed (a topic's size limit
    raised, an ACL granted); the relay publishes them next."""
    from omnistock.platform import db
    from omnistock.platform.outbox import requeue_dead
    from omnistock.services import SERVICES

    (name,) = _service_names([service])

    async def main() -> int:
        conn = await db.connect(get_settings().database_url, schema or SERVICES[name].schema)
        try:
            return await requeue_dead(conn, ids)
        finally:
            await conn.close()

    console.print(f"{name}: {asyncio.run(main())} events back in the outbox")


@app.command()
def bench(
    name: Annotated[
        str, typer.Argument(help="outbox | codec | reservations | pricing | storefront")
    ],
    json: Annotated[
        bool, typer.Option("--json", help="print one JSON object as the last line")
    ] = False,
    seconds: Annotated[float, typer.Option(help="length of each measured phase")] = 10.0,
) -> None:
    """Run a benchmark against the local stack, with its baseline measured in the same run."""
    from omnistock.bench import run_benchmark

    run_benchmark(name, as_json=json, seconds=seconds)


@app.command()
def demo(
    pings: Annotated[int, typer.Option(help="how many pings to send")] = 2000,
) -> None:
    """Show the platform at work: pings through API → outbox → Kafka → consumer → inbox."""
    from omnistock.demo.show import run_demo

    run_demo(pings)


def main() -> None:
    # Keep the child of `stack` from outliving us on Ctrl-C, and keep env for subprocesses.
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
