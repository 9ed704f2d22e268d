"""Reading untrusted JSON, the client's request and Gemini's answers alike: a value of the
wrong type reads as empty, so that no field the converters look at can make them raise."""

import json
from typing import Any


def object_of(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def list_of(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def count_of(value: object) -> int:
    """A token count: a whole number from 0 up, else 0."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def json_of(content: bytes) -> object:
    try:
        return json.loads(content)
    except (ValueError, RecursionError):
        return None
