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
        str,
        typer.Argument(
            help="outbox | codec | reservations | pricing | storefront | orders | capacity"
        ),
    ],
    json: Annotated[
        bool, typer.Option("--json", help="print one JSON object as the last line")
    ] = False,
    seconds: Annotated[float, typer.Option(help="length of each measured phase")] = 10.0,
    rate: Annotated[
        float | None,
        typer.Option(
            help="orders: orders offered per second (latency phase); capacity: the highest rate"
        ),
    ] = None,
    clients: Annotated[int | None, typer.Option(help="orders: concurrent clients")] = None,
    skus: Annotated[int | None, typer.Option(help="orders: SKUs stocked and priced")] = None,
) -> None:
    """Run a benchmark against the local stack, with its baseline measured in the same run."""
    from omnistock.bench import run_benchmark

    options = {"rate": rate, "clients": clients, "skus": skus}
    given = {key: value for key, value in options.items() if value is not None}
    run_benchmark(name, as_json=json, seconds=seconds, options=given)


experiment_app = typer.Typer(
    help="Experiments: omnistock and a baseline on the same seeded demand.", no_args_is_help=True
)
app.add_typer(experiment_app, name="experiment")


@experiment_app.command("cancellations")
def experiment_cancellations(
    json: Annotated[
        bool, typer.Option("--json", help="print one JSON object as the last line")
    ] = False,
    seed: Annotated[int | None, typer.Option(help="seeds the world and the demand")] = None,
    events: Annotated[int | None, typer.Option(min=1, help="demand events, both runs")] = None,
    sync_minutes: Annotated[
        float | None, typer.Option(min=0.01, help="legacy: simulated minutes between syncs")
    ] = None,
    fulfil_after_minutes: Annotated[
        float | None, typer.Option(min=0, help="simulated minutes from order to fulfilment")
    ] = None,
    events_per_minute: Annotated[
        float | None, typer.Option(min=0.01, help="demand events per simulated minute")
    ] = None,
    skus: Annotated[int | None, typer.Option(min=3, help="the catalogue's size")] = None,
    markets: Annotated[int | None, typer.Option(min=1, max=19, help="markets")] = None,
    brands: Annotated[int | None, typer.Option(min=1, max=3, help="brands")] = None,
    stores_per_market: Annotated[int | None, typer.Option(min=0, help="stores per market")] = None,
    store_range: Annotated[
        int | None, typer.Option(min=0, help="SKUs of each brand a store carries")
    ] = None,
    stock_scale: Annotated[
        float | None, typer.Option(min=0.01, help="warehouse depth relative to the world's")
    ] = None,
    subtract_open_orders: Annotated[
        bool | None,
        typer.Option(
            "--subtract-open-orders/--copy-real-stock",
            help="legacy: whether its sync takes open orders off the copies",
        ),
    ] = None,
    out: Annotated[
        Path, typer.Option(help="folder for each run's details and the time series")
    ] = Path("reports/cancellations"),
) -> None:
    """The same seeded demand against the legacy monolith's stock copies (MariaDB) and against
    omnistock's services: orders accepted and later cancelled for lack of stock, in each.
    Options left out take the demo size (omnistock.sim.experiment.Options)."""
    from omnistock.platform.kafka import silence_client_log
    from omnistock.sim.experiment import Options, run_experiment

    silence_client_log()

    given: dict[str, Any] = {
        "seed": seed,
        "events": events,
        "sync_minutes": sync_minutes,
        "fulfil_after_minutes": fulfil_after_minutes,
        "events_per_minute": events_per_minute,
        "skus": skus,
        "markets": markets,
        "brands": brands,
        "stores_per_market": stores_per_market,
        "store_range": store_range,
        "stock_scale": stock_scale,
        "subtract_open_orders": subtract_open_orders,
    }
    options = Options(**{key: value for key, value in given.items() if value is not None})
    run_experiment(options, out, as_json=json)


@app.command()
def simulate(
    rate: Annotated[float, typer.Option(help="arrivals per second, open loop")] = 200.0,
    duration: Annotated[float, typer.Option(help="seconds of traffic")] = 60.0,
    seed: Annotated[int, typer.Option(help="the world's and the traffic's seed")] = 7,
    skus: Annotated[int, typer.Option(help="SKUs in the world")] = 50_000,
    markets: Annotated[int, typer.Option(help="markets (countries), 1 to 19")] = 19,
    brands: Annotated[int, typer.Option(help="brands, 1 to 3")] = 3,
    drain: Annotated[float, typer.Option(help="seconds for open orders to finish")] = 30.0,
    flash: Annotated[int, typer.Option(help="customers in the flash sale's crowd (0: none)")] = 120,
    out: Annotated[Path | None, typer.Option(help="folder for the results")] = None,
    live: Annotated[bool, typer.Option(help="show the live view")] = True,
    json: Annotated[
        bool, typer.Option("--json", help="print one JSON object as the last line")
    ] = False,
) -> None:
    """Retail traffic on a fresh fleet of every service: browsing, checkouts, store and
    warehouse stock changes, a flash sale, fulfilment; then the stock is checked."""
    from omnistock.platform.kafka import silence_client_log
    from omnistock.sim.simulate import WorldSize, main
    from omnistock.sim.traffic import SimOptions

    silence_client_log()
    options = SimOptions(
        seed=seed, rate=rate, duration_s=duration, drain_s=drain, flash_customers=flash, live=live
    )
    main(get_settings(), options, WorldSize(skus, brands, markets), out, json)


@app.command()
def drill(
    json: Annotated[
        bool, typer.Option("--json", help="print one JSON object as the last line")
    ] = False,
    seed: Annotated[int, typer.Option(help="seed of the world and of the load")] = 7,
    fault: Annotated[
        list[str] | None,
        typer.Option("--fault", help="a fault to drill, repeat for several (default: all)"),
    ] = None,
    rate: Annotated[
        float, typer.Option(help="arrivals per second during the drill (one in six checks out)")
    ] = 25.0,
    skus: Annotated[int, typer.Option(help="SKUs in the world")] = 600,
    markets: Annotated[int, typer.Option(help="markets in the world (1 to 19)")] = 2,
    load: Annotated[
        str, typer.Option(help="traffic (the simulator) | builtin (the drill's own small load)")
    ] = "traffic",
    out: Annotated[Path, typer.Option(help="folder for drills.json and the services' logs")] = Path(
        "reports/drill"
    ),
) -> None:
    """Under load, kill -9 every service, the broker and the database, and slow, reset and cut
    their links: time each recovery and check the invariants after each fault."""
    from omnistock.platform.kafka import silence_client_log
    from omnistock.sim.drill import DrillOptions, run_drill

    silence_client_log()
    from omnistock.sim.drill_load import LOADS
    from omnistock.sim.faults import chosen_faults

    try:
        faults = chosen_faults(fault)
    except ValueError as exc:
        console.print(f"[red]{exc}")
        raise typer.Exit(2) from None
    if load not in LOADS:
        console.print(f"[red]unknown load {load}; known: {', '.join(LOADS)}")
        raise typer.Exit(2)
    options = DrillOptions(out, seed, faults, rate, skus, markets, load)
    raise typer.Exit(run_drill(options, as_json=json))


@app.command()
def demo(
    out: Annotated[
        Path | None, typer.Option(help="the report's folder (default: reports/demo-<time>)")
    ] = None,
    seed: Annotated[int, typer.Option(help="seeds the world, the traffic and the faults")] = 7,
    seconds: Annotated[float, typer.Option(min=10, help="seconds of retail traffic")] = 45.0,
    rate: Annotated[float, typer.Option(min=1, help="shoppers' arrivals per second")] = 60.0,
) -> None:
    """The whole platform at a demo size: retail traffic through every service, the
    cancellation experiment against the legacy model, fault drills with the invariant
    checker; then an HTML report with plots and a summary table."""
    from omnistock.platform.kafka import silence_client_log
    from omnistock.sim.demo import DemoOptions, default_out, run_demo

    silence_client_log()

    options = DemoOptions(out=out or default_out(), seed=seed, seconds=seconds, rate=rate)
    raise typer.Exit(run_demo(options))


@app.command("demo-pings")
def demo_pings(
    pings: Annotated[int, typer.Option(help="how many pings to send")] = 2000,
) -> None:
    """The platform's event path alone: pings through API → outbox → Kafka → consumer →
    inbox, the service killed halfway, nothing lost or applied twice."""
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
