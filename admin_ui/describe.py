"""Audit details for people: labelled values instead of raw ``key=value`` pairs."""

from __future__ import annotations

from collections.abc import Mapping

# Keys whose plain reading would mislead or is too terse.
LABELS = {
    "key_id": "Key",
    "ok": "Passed",
    "max_downloads": "Download limit",
    "retention_seconds": "Retention",
    "sha256": "Ciphertext SHA-256",
    "size": "Size",
    "from": "From",
}


def label(key: str) -> str:
    """A field name as a label: ``waiting_files`` → ``Waiting files``."""
    return LABELS.get(key) or key.replace("_", " ").replace("-", " ").capitalize()


def value(item: object) -> str:
    """A detail value as text: yes/no, lists joined, nested fields as ``name: value``."""
    if item is None:
        return "none"
    if isinstance(item, bool):
        return "yes" if item else "no"
    if isinstance(item, list | tuple):
        return ", ".join(value(part) for part in item) or "none"
    if isinstance(item, Mapping):
        return "; ".join(f"{label(str(k)).lower()}: {value(v)}" for k, v in item.items())
    return str(item)


def readable(details: Mapping[str, object]) -> list[tuple[str, str]]:
    """An event's details as (label, text) pairs for a definition list."""
    return [(label(key), value(item)) for key, item in details.items()]
