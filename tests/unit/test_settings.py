"""Settings that would make a deployment unsafe are refused before the service starts."""

from __future__ import annotations

import subprocess
import sys

from omnistock.platform.settings import DEVELOPMENT_JWT_SECRET, Settings


def test_the_development_secret_never_serves_beyond_this_machine() -> None:
    local = Settings(jwt_secret=DEVELOPMENT_JWT_SECRET)
    assert local.refusal_to_serve("127.0.0.1") is None
    refusal = local.refusal_to_serve("0.0.0.0")  # noqa: S104 - what a pod binds
    assert refusal is not None
    assert "OMNISTOCK_JWT_SECRET" in refusal


def test_a_short_secret_is_refused_and_a_strong_one_or_jwks_serves() -> None:
    assert Settings(jwt_secret="short").refusal_to_serve("10.0.0.7") is not None
    assert Settings(jwt_secret="s" * 32).refusal_to_serve("10.0.0.7") is None
    jwks = Settings(jwt_secret=DEVELOPMENT_JWT_SECRET, jwks_url="https://idp.example/jwks")
    assert jwks.refusal_to_serve("10.0.0.7") is None


def test_serve_exits_with_the_reason_instead_of_listening() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "omnistock.cli", "serve", "pricing", "--host", "0.0.0.0"],  # noqa: S104
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "OMNISTOCK_JWT_SECRET": DEVELOPMENT_JWT_SECRET},
    )
    assert result.returncode == 2
    assert "development token secret" in result.stderr


def test_payments_refuses_its_development_secrets_beyond_loopback() -> None:
    from omnistock.payments.api.schemas import PaymentsSettings

    assert PaymentsSettings().refusal_to_serve("127.0.0.1") is None
    refusal = PaymentsSettings().refusal_to_serve("10.0.0.7")
    assert refusal is not None
    assert "OMNISTOCK_PAYMENTS_WEBHOOK_SECRET" in refusal
    strong = "w" * 32
    with_psp = PaymentsSettings(webhook_secret=strong, psp_url="https://psp.example")
    refusal = with_psp.refusal_to_serve("10.0.0.7")
    assert refusal is not None
    assert "OMNISTOCK_PAYMENTS_PSP_API_KEY" in refusal
    ready = PaymentsSettings(
        webhook_secret=strong, psp_url="https://psp.example", psp_api_key="k" * 32
    )
    assert ready.refusal_to_serve("10.0.0.7") is None


def test_serve_checks_the_services_own_secrets_too() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "omnistock.cli", "serve", "payments", "--host", "0.0.0.0"],  # noqa: S104
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "OMNISTOCK_JWT_SECRET": "j" * 32},
    )
    assert result.returncode == 2
    assert "OMNISTOCK_PAYMENTS_WEBHOOK_SECRET" in result.stderr
