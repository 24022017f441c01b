"""The timeline's shape: entries grouped into one card per order."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def _flat(entry: Any) -> dict[str, Any]:
    return {name: held[1] for name, held in sorted(entry["fields"].items())}


def order_cards(entries: Sequence[Any]) -> list[dict[str, Any]]:
    """One card per order: its fields and version, with its payments, parcels and returns. An
    order only known from its payment so far (events of two topics race) is a card without
    status."""
    cards: dict[str, dict[str, Any]] = {}

    def card(order_id: str) -> dict[str, Any]:
        return cards.setdefault(
            order_id,
            {
                "order_id": order_id,
                "version": 0,
                "payments": [],
                "shipments": [],
                "returns": [],
                "parcels": [],
            },
        )

    for entry in entries:
        if entry["kind"] == "member":
            continue  # an account, not part of an order: see accounts()
        order_id = entry["order_id"] or entry["entity_id"]
        fields = _flat(entry)
        if entry["kind"] == "order":
            card(order_id).update({**fields, "version": entry["version"]})
        else:
            identity = entry["entity_id"].rsplit(":", 1)[-1]
            key = {
                "payment": "payment_id",
                "shipment": "shipment_id",
                "return": "return_id",
                "parcel": "booking_id",
            }
            card(order_id)[f"{entry['kind']}s"].append(
                {key[entry["kind"]]: identity, "version": entry["version"], **fields}
            )
    return sorted(
        cards.values(), key=lambda c: (c.get("placed_at") or "", c["order_id"]), reverse=True
    )


def accounts(entries: Sequence[Any]) -> list[dict[str, Any]]:
    """The customer's loyalty accounts (one per brand group and market): balance, held, tier."""
    return [
        {"member_id": e["entity_id"], "version": e["version"], **_flat(e)}
        for e in entries
        if e["kind"] == "member"
    ]
