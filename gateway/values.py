"""One serialization of the services' values, for the CLI's ``--json`` and the API.

Services hand out frozen dataclasses; this turns them (and lists, tuples and mappings of
them) into JSON-ready data: datetimes in ISO 8601 with their offset, enums as their
values, paths as strings.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from datetime import datetime
from enum import Enum
from pathlib import Path


def jsonable(value: object) -> object:
    """``value`` as plain JSON data (dicts, lists, strings, numbers, booleans, None)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {field.name: jsonable(getattr(value, field.name))
                for field in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(key): jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(item) for item in value]
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Path):
        return str(value)
    return value
