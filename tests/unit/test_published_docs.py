"""The API documents in docs/ are generated; this keeps them true to the code."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from omnistock.contracts.asyncapi import asyncapi_document
from omnistock.services import SERVICES

DOCS = Path(__file__).parents[2] / "docs"
REGENERATE = "regenerate with `omnistock contracts` and `omnistock openapi SERVICE --output ...`"


def test_asyncapi_document_is_current() -> None:
    published = json.loads((DOCS / "asyncapi.json").read_text())
    assert published == json.loads(json.dumps(asyncapi_document())), REGENERATE


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_openapi_document_is_current(service: str) -> None:
    published = json.loads((DOCS / "openapi" / f"{service}.json").read_text())
    current = json.loads(json.dumps(SERVICES[service].build_app().openapi()))
    assert published == current, REGENERATE
