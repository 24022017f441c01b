"""Idempotent write requests: the first answer to an ``Idempotency-Key`` is stored in the same
transaction as the effect, and a repeat of the request gets that answer back unchanged."""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson
from fastapi import Request
from pydantic import BaseModel

from omnistock.platform.http import FastJSONResponse, NoContent
from omnistock.platform.problems import Problem

MAX_KEY_LENGTH = 200


@dataclass(frozen=True, slots=True)
class StoredAnswer:
    status: int
    body: Any
    replayed: bool


def request_fingerprint(method: str, path: str, body: Any) -> str:
    raw = orjson.dumps([method, path, body], option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(raw).hexdigest()


def checked_key(key: str | None, *, required: bool = True) -> str | None:
    if key is None or key == "":
        if required:
            raise Problem(
                400,
                "Idempotency-Key required",
                "write requests carry an Idempotency-Key header",
                type_="validation-error",
                errors=[{"field": "header.Idempotency-Key", "message": "required"}],
            )
        return None
    if len(key) > MAX_KEY_LENGTH:
        raise Problem(
            400,
            "Invalid Idempotency-Key",
            f"at most {MAX_KEY_LENGTH} characters",
            type_="validation-error",
            errors=[{"field": "header.Idempotency-Key", "message": "too long"}],
        )
    return key


async def run_once(
    pool: asyncpg.Pool,
    principal: str,
    key: str,
    fingerprint: str,
    effect: Callable[[asyncpg.Connection], Awaitable[tuple[int, Any]]],
) -> StoredAnswer:
    """Run ``effect`` in a transaction that also stores its answer under (principal, key).

    The key is claimed first (a transaction-scoped advisory lock): a second request with the
    same key waits until the first has committed or rolled back, then finds the stored answer,
    rather than running its effect against the state the first just left and being refused
    (an order that already has its payment, say). Errors (4xx raised as Problem) are not stored:
    nothing was changed, so the client may correct the request and send it again.

    The answer is looked for only under the claim: a look before it would save a repeat the
    transaction, at the price of a round trip for every first request, which most are.
    """
    try:
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _claim(principal, key))
            stored = await stored_answer(conn, principal, key, fingerprint)
            if stored is not None:
                return stored
            status, body = await effect(conn)
            await conn.execute(
                """INSERT INTO idempotency_keys
                   (principal, idempotency_key, request_hash, status_code, response_body)
                   VALUES ($1, $2, $3, $4, $5)""",
                principal,
                key,
                fingerprint,
                status,
                orjson.dumps(body),
            )
            return StoredAnswer(status, body, replayed=False)
    except asyncpg.UniqueViolationError as exc:
        if exc.constraint_name != "idempotency_keys_pkey":
            raise
    stored = await stored_answer(pool, principal, key, fingerprint)
    assert stored is not None, "a conflicting key row must exist"
    return stored


def _claim(principal: str, key: str) -> int:
    """The advisory lock of (principal, key): 64 bits of its hash (a collision only makes two
    unrelated requests wait for each other)."""
    digest = hashlib.sha256(f"idempotency\0{principal}\0{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


async def stored_answer(
    pool: asyncpg.Pool | asyncpg.Connection, principal: str, key: str, fingerprint: str
) -> StoredAnswer | None:
    """The answer stored under (principal, key); raises if the key was used for another request."""
    # By primary key, not through ``stored_answers``: its join over arrays was planned afresh
    # on every call (twice an order), which cost more than the lookup itself.
    row = await pool.fetchrow(
        """SELECT request_hash, status_code, response_body FROM idempotency_keys
           WHERE principal = $1 AND idempotency_key = $2""",
        principal,
        key,
    )
    if row is None:
        return None
    answer = answer_of(fingerprint, row["request_hash"], row["status_code"], row["response_body"])
    if isinstance(answer, Problem):
        raise answer
    return answer


async def stored_answers(
    conn: asyncpg.Pool | asyncpg.Connection, requests: list[tuple[str, str, str]]
) -> dict[tuple[str, str], StoredAnswer | Problem]:
    """Stored answers of many (principal, key, fingerprint) requests in one query: the answer,
    or the problem to give a request that reuses a key for something else."""
    rows = await conn.fetch(
        """SELECT k.principal, k.idempotency_key, k.request_hash, k.status_code, k.response_body
           FROM idempotency_keys k
           JOIN unnest($1::text[], $2::text[]) AS w(principal, idempotency_key)
                USING (principal, idempotency_key)""",
        [r[0] for r in requests],
        [r[1] for r in requests],
    )
    wanted = {(p, k): f for p, k, f in requests}
    return {
        (row["principal"], row["idempotency_key"]): answer_of(
            wanted[(row["principal"], row["idempotency_key"])],
            row["request_hash"],
            row["status_code"],
            row["response_body"],
        )
        for row in rows
    }


def answer_of(
    fingerprint: str, request_hash: str, status_code: int, response_body: bytes | str
) -> StoredAnswer | Problem:
    """A stored answer as a request with ``fingerprint`` gets it: replayed if the key was
    stored for the same request, else the problem of a key reused for something else."""
    if request_hash != fingerprint:
        return Problem(
            422,
            "Idempotency-Key reused",
            "this key was used for a different request",
            type_="idempotency-key-reused",
            errors=[{"field": "header.Idempotency-Key", "message": "used for another request"}],
        )
    return StoredAnswer(status_code, orjson.loads(response_body), replayed=True)


async def respond_once(
    request: Request,
    pool: asyncpg.Pool,
    principal: str,
    key: str | None,
    body: BaseModel | None,
    effect: Callable[[asyncpg.Connection], Awaitable[tuple[int, Any]]],
) -> FastJSONResponse:
    """A write request's response, ``effect`` run once per (principal, Idempotency-Key): a
    repeat gets the first answer, marked ``Idempotent-Replayed``, and changes nothing."""
    checked = checked_key(key)
    assert checked is not None
    fingerprint = request_fingerprint(
        request.method, request.url.path, body.model_dump(mode="json") if body else None
    )
    answer = await run_once(pool, principal, checked, fingerprint, effect)
    headers = {"Idempotent-Replayed": "true"} if answer.replayed else {}
    return answer_response(answer.status, answer.body, headers)


def answer_response(
    status: int, body: Any, headers: dict[str, str] | None = None
) -> FastJSONResponse:
    """A write's answer as sent: JSON, or no body at all for a 204 (not even ``null``)."""
    if status == 204:
        return NoContent(None, status_code=204, headers=headers)
    return FastJSONResponse(body, status_code=status, headers=headers)
