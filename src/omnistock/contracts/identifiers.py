"""Identifiers every service and client shares: a SKU or channel valid in one is valid in all."""

from __future__ import annotations

SKU_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
CHANNEL_PATTERN = r"^[a-z0-9][a-z0-9-]{0,63}$"  # brand-market, e.g. "brand-pl"
