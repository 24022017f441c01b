"""HMAC signatures of PSP webhooks: ``t=<unix seconds>,v1=<hex HMAC-SHA256 of "t." + body>``.

The timestamp is signed with the body and must be recent, so a captured webhook cannot be
replayed later; a PSP signs each delivery afresh, a late redelivery included.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime

SIGNATURE_HEADER = "Omnistock-Psp-Signature"
DEVELOPMENT_WEBHOOK_SECRET = "omnistock-psp-webhook-development-secret"  # noqa: S105 - local only


class BadSignature(Exception):
    pass


def sign(secret: str, body: bytes, timestamp: int) -> str:
    return f"t={timestamp},v1={_digest(secret, body, timestamp)}"


def verify(secret: str, body: bytes, header: str | None, now: datetime, tolerance_s: float) -> None:
    """Raises BadSignature unless ``header`` signs ``body`` with ``secret`` within
    ``tolerance_s`` of ``now``."""
    if not header:
        raise BadSignature(f"no {SIGNATURE_HEADER} header")
    fields: dict[str, list[str]] = {}
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        fields.setdefault(name, []).append(value)
    try:
        timestamp = int(fields["t"][0])
    except (KeyError, ValueError):
        raise BadSignature("no timestamp in the signature") from None
    if abs(now.timestamp() - timestamp) > tolerance_s:
        raise BadSignature("the signature's timestamp is too far from now")
    expected = _digest(secret, body, timestamp)
    # Several v1 values are allowed: a PSP rotating its secret signs with both for a while.
    if not any(hmac.compare_digest(expected, given) for given in fields.get("v1", [])):
        raise BadSignature("the signature does not match the body")


def _digest(secret: str, body: bytes, timestamp: int) -> str:
    message = str(timestamp).encode() + b"." + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()
