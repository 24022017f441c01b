"""The AsyncAPI 3.0 document of omnistock's topics and events, generated from the contracts."""

from __future__ import annotations

from typing import Any

import omnistock.contracts  # noqa: F401 - registers every event type
from omnistock.contracts.topics import ALL_TOPICS
from omnistock.platform.events import json_schema, registered_types


def asyncapi_document() -> dict[str, Any]:
    by_topic: dict[str, list[tuple[str, type[Any]]]] = {}
    for type_name, cls in sorted(registered_types().items()):
        by_topic.setdefault(cls.TOPIC, []).append((type_name, cls))
    channels: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    for spec in ALL_TOPICS:
        channel_id = spec.name.replace(".", "_")
        refs = {}
        for type_name, cls in by_topic.get(spec.name, []):
            message_id = type_name.replace(".", "_")
            messages[message_id] = {
                "name": type_name,
                "title": cls.__name__,
                "summary": (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else "",
                "contentType": "application/cloudevents+json",
                "payload": _envelope_schema(type_name, json_schema(cls)),
            }
            refs[message_id] = {"$ref": f"#/components/messages/{message_id}"}
        channels[channel_id] = {
            "address": spec.name,
            "description": spec.description,
            "messages": refs,
            "bindings": {
                "kafka": {
                    "topicConfiguration": {
                        "cleanup.policy": ["compact"] if spec.compacted else ["delete"]
                    }
                }
            },
        }
        operations[f"receive_{channel_id}"] = {
            "action": "receive",
            "channel": {"$ref": f"#/channels/{channel_id}"},
        }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "omnistock events",
            "version": "1.0.0",
            "description": "CloudEvents 1.0 (structured JSON) on Kafka, keyed by aggregate id.",
        },
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages},
    }


def _envelope_schema(type_name: str, data_schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["specversion", "id", "source", "type", "time", "subject", "data"],
        "properties": {
            "specversion": {"const": "1.0"},
            "id": {"type": "string", "format": "uuid"},
            "source": {"type": "string"},
            "type": {"const": type_name},
            "subject": {"type": "string", "description": "the aggregate id"},
            "time": {"type": "string", "format": "date-time"},
            "datacontenttype": {"const": "application/json"},
            "aggregateversion": {"type": "integer", "minimum": 0},
            "correlationid": {"type": "string"},
            "data": data_schema,
        },
    }
