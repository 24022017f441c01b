"""Writes the JSON schema of every registered event type next to this file."""

import json
from pathlib import Path

import omnistock.contracts  # noqa: F401
from omnistock.platform.events import json_schema, registered_types

here = Path(__file__).parent
for type_name, cls in registered_types().items():
    (here / f"{type_name}.json").write_text(
        json.dumps(json_schema(cls), indent=2, sort_keys=True) + "\n"
    )
    print(f"pinned {type_name}")
