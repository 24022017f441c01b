"""The PSP's webhooks: authenticated by their HMAC signature, not by a bearer token.

A PSP delivers at least once, in any order, and re-delivers what it thinks was lost. The event
id is remembered (a redelivery is answered 200 and changes nothing), and a decision applies only
to an operation still pending (a late or out-of-order one finds it resolved and changes
nothing either).
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

import asyncpg
import structlog
from fastapi import APIRouter, Depends, Request
from pydantic import ValidationError

from omnistock.payments import repository, service
from omnistock.payments.api.schemas import PspWebhookIn
from omnistock.payments.psp import Decision, PspResult
from omnistock.payments.signatures import SIGNATURE_HEADER, BadSignature, verify
from omnistock.platform.clock import Clock
from omnistock.platform.http import FastJSONResponse
from omnistock.platform.problems import Problem

log = structlog.get_logger(__name__)

router = APIRouter(prefix="/v1", tags=["payments"])

SIGNED = {
    "x-signature": f"HMAC-SHA256 of the body in the {SIGNATURE_HEADER} header; no bearer token",
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": PspWebhookIn.model_json_schema()}},
    },
}


async def signed_body(request: Request) -> bytes:
    """The raw body, once its signature is verified; 401 otherwise."""
    body = await request.body()
    state = request.app.state
    try:
        verify(
            state.webhook_secret,
            body,
            request.headers.get(SIGNATURE_HEADER),
            state.clock.now(),
            state.webhook_tolerance_s,
        )
    except BadSignature as exc:
        raise Problem(401, "Invalid signature", str(exc), type_="unauthorized") from None
    return body


@router.post("/psp/webhooks", openapi_extra=SIGNED)
async def receive_webhook(
    request: Request, body: Annotated[bytes, Depends(signed_body)]
) -> FastJSONResponse:
    """A PSP webhook. Answers 200 with what it did: ``applied``, ``duplicate`` (seen before)
    or ``ignored`` (old news, or about nothing of ours)."""
    try:
        hook = PspWebhookIn.model_validate_json(body)
    except ValidationError as exc:
        errors = [
            {"field": ".".join(str(p) for p in e["loc"]) or "body", "message": e["msg"]}
            for e in exc.errors()
        ]
        raise Problem(422, "Invalid webhook", type_="validation-error", errors=errors) from None
    state = request.app.state
    async with state.runtime.pool.acquire() as conn, conn.transaction():
        result = await apply_webhook(conn, state.clock, state.timing, hook)
    log.info("PSP webhook", event_id=hook.id, type=hook.type, result=result)
    return FastJSONResponse({"id": hook.id, "result": result})


async def apply_webhook(
    conn: asyncpg.Connection, clock: Clock, timing: service.Timing, hook: PspWebhookIn
) -> str:
    if not await repository.record_webhook(conn, hook.id, hook.type, clock.now()):
        return "duplicate"
    applied: Any = False
    if hook.type == "request.decided" and _ours(hook.idempotency_key) and hook.decision:
        assert hook.idempotency_key is not None
        decision = Decision(hook.decision)
        result = PspResult(decision, hook.reference, hook.reason, hook.expires_at)
        applied = await service.record_outcome(conn, clock, timing, hook.idempotency_key, result)
    elif hook.type == "authorization.expired" and hook.reference:
        applied = await service.expire_authorization(conn, clock, timing, hook.reference)
    outcome = "applied" if applied else "ignored"
    await repository.webhook_result(conn, hook.id, outcome)
    return outcome


def _ours(key: str | None) -> bool:
    """Our idempotency keys are operation ids (UUIDs); anything else is not about us."""
    try:
        uuid.UUID(key or "")
    except ValueError:
        return False
    return True
