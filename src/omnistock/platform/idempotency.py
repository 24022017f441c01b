"""Idempotent write requests: the first answer to an ``Idempotency-Key`` is stored in the same
transaction as the effect, and a repeat of the request gets that answer back unchanged."""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson

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

    Two concurrent requests with one key: the loser's transaction fails on the key's primary key,
    rolls its effect back, and returns the winner's answer. Errors (4xx raised as Problem) are not
    stored: nothing was changed, so the client may correct the request and send it again.
    """
    stored = await _stored(pool, principal, key, fingerprint)
    if stored is not None:
        return stored
    try:
        async with pool.acquire() as conn, conn.transaction():
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
    stored = await _stored(pool, principal, key, fingerprint)
    assert stored is not None, "a conflicting key row must exist"
    return stored


async def _stored(
    pool: asyncpg.Pool, principal: str, key: str, fingerprint: str
) -> StoredAnswer | None:
    row = await pool.fetchrow(
        """SELECT request_hash, status_code, response_body FROM idempotency_keys
           WHERE principal = $1 AND idempotency_key = $2""",
        principal,
        key,
    )
    if row is None:
        return None
    if row["request_hash"] != fingerprint:
        raise Problem(
            422,
            "Idempotency-Key reused",
            "this key was used for a different request",
            type_="idempotency-key-reused",
            errors=[{"field": "header.Idempotency-Key", "message": "used for another request"}],
        )
    return StoredAnswer(row["status_code"], orjson.loads(row["response_body"]), replayed=True)
