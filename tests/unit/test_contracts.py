"""Each event's JSON schema is pinned: a change shows up here and must be additive."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import omnistock.contracts  # noqa: F401 - registers the event types
from omnistock.contracts.topics import ALL_TOPICS
from omnistock.platform.events import json_schema, registered_types

PINNED = Path(__file__).parents[1] / "contracts"


def test_every_event_type_is_pinned() -> None:
    pinned = {p.stem for p in PINNED.glob("*.json")}
    assert pinned == set(registered_types()), "run `python tests/contracts/pin.py` for new types"


@pytest.mark.parametrize("type_name", sorted(registered_types()))
def test_schema_matches_the_pinned_one(type_name: str) -> None:
    current = json_schema(registered_types()[type_name])
    pinned = json.loads((PINNED / f"{type_name}.json").read_text())
    assert current == pinned, f"{type_name} changed: add a field (and re-pin) or make a v2 type"


@pytest.mark.parametrize("type_name", sorted(registered_types()))
def test_types_are_versioned_names_on_a_known_topic(type_name: str) -> None:
    cls = registered_types()[type_name]
    assert type_name.startswith("omnistock.")
    assert type_name.rsplit(".", 1)[1].startswith("v")
    assert cls.TOPIC in {spec.name for spec in ALL_TOPICS}
