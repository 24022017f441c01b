"""The simulator's calls to the fleet's public HTTP APIs: each one timed into the Recorder and
its answer classified, so that nothing that goes wrong goes unseen. A 409 is the business
saying no (out of stock, a state that has moved on) and is expected; a 429 is backpressure;
any other 4xx is a request the simulator should not have sent; 5xx, timeouts and broken
connections are the platform failing. Calls that are safe to repeat (reads, and writes under
an Idempotency-Key) are repeated after a failure, as a careful client would: every try is
recorded."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson

from omnistock.sim.fleet import Fleet
from omnistock.sim.metrics import Recorder

HEALTHY = frozenset({"ok", "business"})
TRIED_AGAIN = frozenset({"server", "timeout", "transport", "throttled"})
PROBLEM_PREFIX = "urn:omnistock:problem:"


@dataclass(frozen=True, slots=True)
class Answer:
    status: int  # 0 when no answer came
    body: Any
    outcome: str  # ok | business | throttled | client | server | timeout | transport
    kind: str  # e.g. "201", "409 out-of-stock", "timeout"

    @property
    def ok(self) -> bool:
        return self.outcome == "ok"

    def problem(self) -> str | None:
        """The problem type's short name (``out-of-stock``), if the answer is a problem."""
        if isinstance(self.body, dict) and isinstance(self.body.get("type"), str):
            return str(self.body["type"]).removeprefix(PROBLEM_PREFIX)
        return None


def classify(status: int, body: Any) -> tuple[str, str]:
    """(outcome, kind) of an HTTP answer."""
    if 200 <= status < 300:
        return "ok", str(status)
    problem = body.get("type") if isinstance(body, dict) else None
    name = str(problem).removeprefix(PROBLEM_PREFIX) if problem else "-"
    kind = f"{status} {name}"
    if status == 409:
        return "business", kind
    if status == 429:
        return "throttled", kind
    if status >= 500:
        return "server", kind
    return "client", kind


@dataclass
class Api:
    """One keep-alive client per service of the fleet, tokens minted once per identity."""

    fleet: Fleet
    recorder: Recorder
    timeout_s: float = 10.0
    retries: int = 3
    tally: Counter[tuple[str, str, str]] = field(default_factory=Counter)  # (op, outcome, kind)
    samples: dict[str, str] = field(default_factory=dict)  # kind → the first answer's body
    _clients: dict[str, httpx.AsyncClient] = field(default_factory=dict)
    _headers: dict[tuple[str, tuple[str, ...]], dict[str, str]] = field(default_factory=dict)

    def headers(self, subject: str, scopes: Sequence[str]) -> dict[str, str]:
        key = (subject, tuple(scopes))
        if key not in self._headers:
            self._headers[key] = self.fleet.headers(subject, scopes)
        return self._headers[key]

    def customer(self, customer_id: str) -> dict[str, str]:
        return self.headers(customer_id, ("customer",))

    def _client(self, service: str) -> httpx.AsyncClient:
        if service not in self._clients:
            self._clients[service] = httpx.AsyncClient(
                base_url=self.fleet.url(service),
                timeout=httpx.Timeout(self.timeout_s, connect=min(5.0, self.timeout_s)),
                # Idle connections are dropped before the server's keep-alive timeout (5 s)
                # could close one under a request just sent on it.
                limits=httpx.Limits(
                    max_connections=128, max_keepalive_connections=64, keepalive_expiry=2.0
                ),
            )
        return self._clients[service]

    async def close(self) -> None:
        for client in self._clients.values():
            await client.aclose()
        self._clients.clear()

    async def call(
        self,
        op: str,
        service: str,
        method: str,
        path: str,
        *,
        headers: dict[str, str],
        body: Any = None,
        params: dict[str, str] | None = None,
        key: str | None = None,
        repeatable: bool | None = None,
    ) -> Answer:
        """The call, tried again after a failure when it is safe to (a read, a write with an
        Idempotency-Key, or one the API documents as idempotent by nature); the last answer."""
        if repeatable is None:
            repeatable = method in ("GET", "PUT", "DELETE") or key is not None
        sent = {**headers, "Idempotency-Key": key} if key is not None else headers
        content = orjson.dumps(body) if body is not None else None
        if content is not None:
            sent = {**sent, "Content-Type": "application/json"}
        attempt = 0
        while True:
            answer, wait_s = await self._once(op, service, method, path, sent, content, params)
            attempt += 1
            if answer.outcome not in TRIED_AGAIN or not repeatable or attempt > self.retries:
                return answer
            await asyncio.sleep(wait_s or min(2.0, 0.25 * 2 ** (attempt - 1)))

    async def _once(
        self,
        op: str,
        service: str,
        method: str,
        path: str,
        headers: dict[str, str],
        content: bytes | None,
        params: dict[str, str] | None,
    ) -> tuple[Answer, float]:
        started = time.monotonic()
        wait_s = 0.0
        try:
            response = await self._client(service).request(
                method, path, headers=headers, content=content, params=params
            )
        except httpx.TimeoutException:
            answer = Answer(0, None, "timeout", "timeout")
        except httpx.HTTPError as exc:
            answer = Answer(0, None, "transport", f"transport {type(exc).__name__}")
        else:
            body = _json(response)
            outcome, kind = classify(response.status_code, body)
            answer = Answer(response.status_code, body, outcome, kind)
            if outcome in ("client", "server") and kind not in self.samples:
                self.samples[kind] = f"{op} {method} {path}: {response.text[:300]}"
            retry_after = response.headers.get("Retry-After", "")
            wait_s = float(retry_after) if retry_after.isdigit() else 0.0
        self.recorder.record(op, time.monotonic() - started, answer.outcome in HEALTHY)
        self.tally[(op, answer.outcome, answer.kind)] += 1
        return answer, wait_s

    def count(self, op: str, outcome: str, kind: str) -> None:
        """Something that went wrong on the simulator's side of a call (a task that raised):
        counted like an answer, never dropped."""
        self.recorder.record(op, 0.0, False)
        self.tally[(op, outcome, kind)] += 1

    def kinds(self, outcomes: frozenset[str]) -> dict[str, int]:
        found: Counter[str] = Counter()
        for (_, outcome, kind), n in self.tally.items():
            if outcome in outcomes:
                found[kind] += n
        return dict(found.most_common())


def _json(response: httpx.Response) -> Any:
    if not response.content:
        return None
    try:
        return orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return response.text
