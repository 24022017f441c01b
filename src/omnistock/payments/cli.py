"""Payments commands: the PSP simulator as a server of its own."""

from __future__ import annotations

from typing import Annotated

import typer

app = typer.Typer(help="The simulated PSP.", no_args_is_help=True, add_completion=False)


@app.command("psp-sim")
def psp_sim(
    port: Annotated[int, typer.Option(help="HTTP port")] = 8090,
    host: Annotated[str, typer.Option(help="HTTP host")] = "127.0.0.1",
    webhook_url: Annotated[
        str | None,
        typer.Option(help="where webhooks go, e.g. http://127.0.0.1:8000/v1/psp/webhooks"),
    ] = None,
) -> None:
    """Serve the simulated PSP; its knobs come from OMNISTOCK_PSP_SIM_* (see docs/payments.md)."""
    import uvicorn

    from omnistock.payments.simulator import SimulatorSettings
    from omnistock.payments.simulator.server import build_simulator_app

    settings = SimulatorSettings()
    if webhook_url is not None:
        settings = settings.model_copy(update={"webhook_url": webhook_url})
    uvicorn.run(
        build_simulator_app(settings),
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
    )
