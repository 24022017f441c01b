"""Fault drills: under load, every service killed with SIGKILL in turn and started again, the
broker and the database killed and started again, and the services' links to PostgreSQL and
Kafka slowed, reset and cut through Toxiproxy. For each fault, how long until traffic of the
kind it hit is served again and the event flow is current (consumer lag back to zero, outboxes
drained), and whether every invariant still holds (``sim/invariants.py``). Conditions are
waited for, each with a deadline, never a fixed sleep; a service that dies on its own while
the database or the broker is away is started again, as an orchestrator would.

The results and the run's recorder (requests per second, marks at each fault) go to
``drills.json`` in the output folder, the services' logs beside it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console

from omnistock.platform.settings import Settings, get_settings
from omnistock.sim import world as worlds
from omnistock.sim.drill_board import Board, group_name
from omnistock.sim.drill_load import LOADS, LoadOptions
from omnistock.sim.faults import FAULTS, Fault, stack
from omnistock.sim.fleet import SERVICES, Fleet
from omnistock.sim.flow import Flow, Schemas
from omnistock.sim.invariants import Checker, Verdict
from omnistock.sim.metrics import Recorder
from omnistock.sim.probes import Probes
from omnistock.sim.seed import seed
from omnistock.sim.toxiproxy import (
    KAFKA_PROXIED_PORT,
    KAFKA_PROXY_PORT,
    Toxiproxy,
    ensure_toxiproxy,
    kafka_proxiable,
    through,
    upstream_of,
)


@dataclass(frozen=True, slots=True)
class DrillOptions:
    out: Path
    seed: int = 7
    faults: tuple[str, ...] = tuple(FAULTS)
    rate: float = 25.0  # arrivals per second
    skus: int = 600
    markets: int = 2
    load: str = "traffic"  # a key of LOADS
    services: tuple[str, ...] = SERVICES  # a fleet of fewer (in the fleet's order) for tests
    warm_up_s: float = 5.0

    def load_options(self) -> LoadOptions:
        return LoadOptions(self.rate, self.seed)


@dataclass
class Drill:
    options: DrillOptions
    settings: Settings
    console: Console
    run: str = field(default_factory=lambda: uuid.uuid4().hex[:6])
    recorder: Recorder = field(default_factory=Recorder)
    results: list[dict[str, Any]] = field(default_factory=list)
    notes: dict[str, str] = field(default_factory=dict)
    setup: dict[str, float] = field(default_factory=dict)
    # Run once the final invariants are checked, with the fleet still up (a test tampers with
    # a schema there and checks again).
    epilogue: Callable[[Drill], Coroutine[Any, Any, Any]] | None = None
    epilogue_result: Any = None
    began: float = field(default_factory=time.monotonic)
    died: set[str] = field(default_factory=set)  # services that died on their own
    _restarting: set[str] = field(default_factory=set)

    async def execute(self) -> dict[str, Any]:
        options = self.options
        world = worlds.build(options.seed, skus=options.skus, markets=options.markets)
        logs = options.out / "logs"
        # The services' logs of a drill run to hundreds of MB (every outage's tracebacks): an
        # output folder keeps those of its latest run only.
        if logs.is_dir():
            await asyncio.to_thread(shutil.rmtree, logs)
        fleet = Fleet(self.settings, self.run, logs / self.run, services=options.services)
        schemas = Schemas(fleet)
        self.board = Board(self.console, self.recorder, [FAULTS[f] for f in options.faults])
        stop, proxy = asyncio.Event(), None
        tasks: list[asyncio.Task[None]] = []
        try:
            proxy = await self._network(fleet)
            self.console.print(f"drill {self.run}: starting the fleet (logs in {fleet.directory})")
            started = time.monotonic()
            await fleet.start()
            self.setup["fleet_s"] = round(time.monotonic() - started, 1)
            await seed(fleet, world, self.console)
            self.setup["seed_s"] = round(time.monotonic() - started - self.setup["fleet_s"], 1)
            self.fleet, self.proxy = fleet, proxy
            self.flow, self.probes = Flow(fleet, schemas), Probes(fleet, world, self.recorder)
            self.checker = Checker(schemas, self.flow)
            with self.board.live():
                tasks.append(asyncio.create_task(self._sample()))
                tasks.append(
                    asyncio.create_task(
                        LOADS[options.load](
                            fleet, world, options.load_options(), self.recorder, stop
                        )
                    )
                )
                warming = time.monotonic()
                await self._warm_up()
                self.setup["warm_up_s"] = round(time.monotonic() - warming, 1)
                for name in options.faults:
                    self.results.append(await self._drill(FAULTS[name]))
                stop.set()
                await tasks[1]
                final = await self._settle()
                if self.epilogue is not None:
                    self.epilogue_result = await self.epilogue(self)
        finally:
            stop.set()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self._tidy(fleet, schemas, proxy)
        return self._summary(final)

    # -- the network: Toxiproxy in front of PostgreSQL and, if it can be, Kafka --

    async def _network(self, fleet: Fleet) -> Toxiproxy | None:
        links = {FAULTS[f].link for f in self.options.faults if FAULTS[f].kind == "link"}
        env: dict[str, str] = {}
        proxy = None
        if links:
            proxy = Toxiproxy(
                await asyncio.to_thread(ensure_toxiproxy),
                fleet.directory / "toxiproxy.log",
            )
            await proxy.start()
        if "postgres" in links and proxy is not None:
            pg = await proxy.add("postgres", upstream_of(self.settings.database_url))
            env["OMNISTOCK_DATABASE_URL"] = through(self.settings.database_url, pg.listen_port)
        # The broker's proxy listens on a fixed port (the one its listener advertises): only
        # a drill that faults that link takes it.
        refusal = kafka_proxiable(self.settings.kafka_bootstrap) if "kafka" in links else None
        if "kafka" in links and proxy is not None and refusal is None:
            kafka = await proxy.add("kafka", f"127.0.0.1:{KAFKA_PROXIED_PORT}", KAFKA_PROXY_PORT)
            env["OMNISTOCK_KAFKA_BOOTSTRAP"] = kafka.listen
        elif refusal is not None:
            self.notes["kafka_not_proxied"] = refusal
        for service in fleet.services:
            # Static membership, as pods of a StatefulSet have: a restarted consumer gets its
            # partitions back at once instead of after the dead one's session timeout.
            fleet.extra_env[service] = {
                "OMNISTOCK_CONSUMER_INSTANCE_ID": f"drill-{self.run}-{service}",
                **env,
            }
        return proxy

    # -- phases --

    async def _warm_up(self) -> None:
        self.board.phase("warming up: traffic and event flow")
        deadline = time.monotonic() + 120
        started = time.monotonic()
        everyone = self.fleet.services
        failing: list[str] = []
        while time.monotonic() < deadline:
            served = [await self.probes.ok(s) for s in everyone]
            failing = [s for s, ok in zip(everyone, served, strict=True) if not ok]
            if not failing and not await self.flow.current():
                failing = ["the event flow (consumer lag, outboxes)"]
            if not failing and time.monotonic() - started >= self.options.warm_up_s:
                self.recorder.mark("warmed up")
                return
            await asyncio.sleep(0.5)
        raise RuntimeError(f"the fleet never warmed up; still failing: {', '.join(failing)}")

    async def _drill(self, fault: Fault) -> dict[str, Any]:
        result: dict[str, Any] = {
            "fault": fault.name,
            "kind": fault.kind,
            "target_s": fault.target_s,
        }
        if fault.link and (self.proxy is None or fault.link not in self.proxy.links):
            result["skipped"] = self.notes.get("kafka_not_proxied", "no proxy for the link")
        if fault.kind == "service" and fault.name not in self.fleet.services:
            result["skipped"] = "not in this fleet"
        if "skipped" in result:
            self.board.done(fault.name, result)
            return result
        self.board.start(fault.name)
        self.recorder.mark(f"{fault.name} injected", fault=fault.name)
        injected = time.monotonic()
        failed_before = self.probes.failures.copy()
        try:
            restart = await self._inject(fault, result)
        except RuntimeError as exc:  # the stack script could not kill it: nothing to observe
            result["skipped"] = f"not injected: {str(exc)[-300:]}"
            self.board.done(fault.name, result)
            return result
        cleared = time.monotonic()
        self.died.clear()
        recovered = await self._recovered(fault, cleared)
        if restart is not None:
            try:
                result["restart_s"] = round(await restart, 2)
            except (RuntimeError, TimeoutError) as exc:  # slow to answer, or died starting
                result["restart_error"] = str(exc)[-300:]
        if self.died:
            result["died_on_their_own"] = sorted(self.died)
        if recovered is None:
            await self._repair(fault, result)
            result["recovery_s"], result["recovered"] = None, False
        else:
            # A kill is recovered from when it struck; a link fault from when it was undone.
            since = injected if fault.kind != "link" else cleared
            result["recovery_s"] = round(recovered - since, 2)
            result["recovered"] = True
            self.recorder.mark(f"{fault.name} recovered", fault=fault.name)
        result["within_target"] = recovered is not None and result["recovery_s"] <= fault.target_s
        failed = self.probes.failures - failed_before
        result["probe_failures"] = {f"{s}: {kind}": n for (s, kind), n in sorted(failed.items())}
        self.board.phase(f"{fault.name}: checking invariants")
        verdict = await self._verdict(settled=False)
        result["invariants_ok"] = verdict.ok
        result["invariants"] = verdict.as_dict()
        self.board.done(fault.name, result)
        return result

    async def _inject(self, fault: Fault, result: dict[str, Any]) -> asyncio.Task[float] | None:
        if fault.kind == "service":
            self.fleet.kill(fault.name)
            return self._restart(fault.name)
        if fault.kind == "stack":
            await asyncio.to_thread(stack, "kill", fault.name)
            return asyncio.create_task(self._timed(asyncio.to_thread(stack, "start", fault.name)))
        assert self.proxy is not None
        if fault.toxic is None:
            await self.proxy.cut(fault.link)
        else:
            await self.proxy.toxic(fault.link, fault.toxic[0], fault.toxic[1])
        until = time.monotonic() + fault.hold_s
        probes = fault.probed(self.fleet.services)
        shares = await asyncio.gather(*(self._served(s, until) for s in probes))
        await self.proxy.heal(fault.link)
        self.recorder.mark(f"{fault.name} undone", fault=fault.name)
        result["fault_s"] = fault.hold_s
        result["served_during_fault"] = dict(zip(probes, shares, strict=True))
        return None

    async def _served(self, service: str, until: float) -> float:
        """The share of requests to ``service`` served until ``until``, one at a time."""
        served = tried = 0
        while time.monotonic() < until:
            tried += 1
            served += await self.probes.ok(service)
            await asyncio.sleep(max(0.0, min(0.25, until - time.monotonic())))
        return round(served / max(1, tried), 2)

    async def _timed(self, work: Coroutine[Any, Any, None]) -> float:
        started = time.monotonic()
        await work
        return time.monotonic() - started

    def _restart(self, name: str) -> asyncio.Task[float]:
        """``name`` started again (stopped first if it still runs); seconds to ready."""
        self._restarting.add(name)

        async def restart() -> float:
            try:
                return await self.fleet.restart(name)
            finally:
                self._restarting.discard(name)

        task = asyncio.create_task(restart())
        task.add_done_callback(lambda t: t.cancelled() or t.exception())
        return task

    def _supervise(self) -> None:
        """Start again a member that died by itself (the database or broker gone)."""
        for name, member in self.fleet.members.items():
            if name in self.fleet.services and not member.alive() and name not in self._restarting:
                self.recorder.mark(f"{name} died, restarted", service=name)
                self.died.add(name)
                self._restart(name)

    async def _repair(self, fault: Fault, result: dict[str, Any]) -> None:
        """After a fault the platform did not recover from by itself: what still failed; the
        services among them that say they are ready (so they are stuck, not still starting)
        restarted, so that the next fault starts from a working fleet."""
        failing = [s for s in fault.probed(self.fleet.services) if not await self.probes.ok(s)]
        result["still_failing"] = {s: self.probes.failure(s) for s in failing}
        if not await self.flow.current():
            result["flow_behind"] = _backlog(await self.flow.look())
        stuck = [s for s in failing if await self._ready(s)]
        self.board.phase(f"{fault.name}: did not recover; restarting {', '.join(stuck) or '-'}")
        for service in stuck:
            self.recorder.mark(f"{service} restarted to recover", service=service)
            self._restart(service)
        result["restarted_to_recover"] = stuck
        await self._recovered(fault, time.monotonic())

    async def _ready(self, service: str) -> bool:
        with contextlib.suppress(httpx.HTTPError):
            async with httpx.AsyncClient(timeout=2) as client:
                answer = await client.get(f"{self.fleet.url(service)}/readyz")
                return answer.status_code == 200
        return False

    async def _recovered(self, fault: Fault, since: float) -> float | None:
        deadline = since + fault.patience_s()
        while time.monotonic() < deadline:
            self._supervise()
            probes = fault.probed(self.fleet.services)
            if await self.probes.all_ok(probes) and await self.flow.current():
                return time.monotonic()
            await asyncio.sleep(0.25)
        return None

    async def _verdict(self, settled: bool) -> Verdict:
        try:
            return await self.checker.check(settled=settled)
        except Exception as exc:  # a check that could not run is a failed check, with why
            verdict = Verdict()
            verdict.flag(
                "checker_ran", "the invariant checker could not read", [{"error": repr(exc)}]
            )
            return verdict

    async def _settle(self) -> dict[str, Any]:
        """Traffic stopped: every order on its way done and the flow drained, then the
        invariants with nothing tolerated."""
        self.board.phase("settling: no traffic, waiting for sagas and events")
        deadline = time.monotonic() + self.checker.windows.retry_window_s
        while time.monotonic() < deadline:
            self._supervise()
            if await self._quiet() and await self.flow.current():
                break
            await asyncio.sleep(0.5)
        self.recorder.mark("settled")
        self.board.phase("final invariants")
        verdict = await self._verdict(settled=True)
        return {"invariants_ok": verdict.ok, "invariants": verdict.as_dict()}

    async def _quiet(self) -> bool:
        with contextlib.suppress(Exception):
            async with self.flow.schemas.connection("orders") as conn:
                busy = await conn.fetchval(
                    """SELECT count(*) FROM orders WHERE status IN ('placed', 'allocated',
                       'authorized', 'cancelling', 'delivered', 'collected')"""
                )
            return bool(busy == 0)
        return False

    async def _sample(self) -> None:
        """The event flow's backlog, once a second, as gauges of the recorder."""
        while True:
            backlog = await self.flow.look()
            for group, behind in (backlog.lag or {}).items():
                self.recorder.gauge(f"lag {group_name(group)}", behind)
            self.recorder.gauge("outbox waiting", sum(n for n, _ in backlog.outbox.values()))
            self.board.backlog(backlog)
            await asyncio.sleep(1.0)

    async def _tidy(self, fleet: Fleet, schemas: Schemas, proxy: Toxiproxy | None) -> None:
        """Whatever happened: the stack's broker and database running, the run's processes
        stopped and its schemas dropped."""
        for component in ("postgres", "kafka"):
            with contextlib.suppress(RuntimeError):
                await asyncio.to_thread(stack, "start", component)
        with contextlib.suppress(AttributeError):
            await self.probes.close()
        with contextlib.suppress(AttributeError):
            self.flow.close()
        await schemas.close()
        fleet.stop()
        if proxy is not None:
            await proxy.close()
        with contextlib.suppress(Exception):
            await fleet.drop()

    def _summary(self, final: dict[str, Any]) -> dict[str, Any]:
        ran = [r for r in self.results if "skipped" not in r]
        outcome = {
            "drill": "faults",
            "seed": self.options.seed,
            "run": self.run,
            "world": {"skus": self.options.skus, "markets": self.options.markets},
            "rate": self.options.rate,
            "faults": {r["fault"]: _brief(r) for r in self.results},
            "within_target": all(r.get("within_target") for r in ran),
            "invariants_ok": all(r.get("invariants_ok") for r in ran) and final["invariants_ok"],
            "final": _brief(final),
            "load": self.options.load,
            "setup_s": self.setup,
            "elapsed_s": round(time.monotonic() - self.began, 1),
            **self.notes,
        }
        self.options.out.mkdir(parents=True, exist_ok=True)
        saved = {
            **outcome,
            "faults": self.results,
            "final": final,
            "recorder": self.recorder.as_dict(),
        }
        (self.options.out / "drills.json").write_text(_json(saved))
        return outcome


def _brief(result: dict[str, Any]) -> dict[str, Any]:
    """A fault's line in the summary: the figures, and the violations only when there are."""
    keep = ("recovery_s", "target_s", "within_target", "invariants_ok", "restart_s", "fault_s")
    more = ("served_during_fault", "skipped", "still_failing", "died_on_their_own")
    brief = {k: result[k] for k in (*keep, *more) if k in result}
    violations = result.get("invariants", {}).get("violations")
    if violations:
        brief["violations"] = violations
    return brief


def _backlog(backlog: Any) -> dict[str, Any]:
    return {"lag": backlog.lag, "outbox": {s: n for s, (n, _) in backlog.outbox.items() if n}}


def _json(value: Any) -> str:
    return json.dumps(value, indent=1, default=str)


def run_drill(options: DrillOptions, as_json: bool) -> int:
    """The drill, its summary as one JSON line on stdout with ``as_json``; the exit code is
    1 when a fault was never recovered from or an invariant was violated."""
    console = Console(stderr=True)
    outcome = asyncio.run(Drill(options, get_settings(), console).execute())
    line = json.dumps(outcome, separators=(",", ":"))
    # The live board leaves its last line open: the JSON starts on a line of its own, and
    # comes last even where stderr and stdout go to one place.
    console.line()
    console.print(f"results and the recorder: {options.out / 'drills.json'}")
    if as_json:
        print(line, flush=True)
    else:
        console.print_json(line)
    recovered = all(
        f.get("recovery_s") is not None or "skipped" in f for f in outcome["faults"].values()
    )
    return 0 if recovered and outcome["invariants_ok"] else 1
