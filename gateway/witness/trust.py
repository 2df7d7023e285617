"""A witness's configuration: its name and key file, and the logs it trusts.

A TOML file, for example::

    name = "witness.partner.example/w1"
    key_file = "witness.key"            # relative to this file's directory

    [[log]]
    vkey = "registry.example/blindpost+1a2b3c4d+AR..."   # `blindpost audit key` prints it
    # origin = "registry.example/blindpost"              # default: the key's name

A log is identified by its origin; several ``[[log]]`` tables with one origin trust
several keys for it (a key rotation).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

from gateway.audit.cosignature import Cosigner
from gateway.audit.errors import AuditError
from gateway.audit.note import NoteVerifier, read_private_key
from gateway.errors import ConfigError

_KEYS = {"name", "key_file", "log"}
_LOG_KEYS = {"vkey", "origin"}


@dataclass(frozen=True)
class WitnessConfig:
    """The parsed configuration: who the witness is and whom it believes."""

    name: str
    key_file: Path
    logs: dict[str, tuple[NoteVerifier, ...]]

    def cosigner(self) -> Cosigner:
        """Load the witness's signing key."""
        key = read_private_key(self.key_file, what="witness key",
                               hint="create one with `blindpost witness keygen`")
        return Cosigner(self.name, key)


def load_config(path: Path) -> WitnessConfig:
    """Read and check the configuration file; raise :class:`ConfigError` naming the fault."""
    try:
        with path.open("rb") as handle:
            document = tomllib.load(handle)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the witness configuration "
                          f"({exc.strerror})") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from exc
    unknown = set(document) - _KEYS
    if unknown:
        raise ConfigError(f"{path}: unknown setting(s) {', '.join(sorted(unknown))}; "
                          f"accepted: {', '.join(sorted(_KEYS))}")
    name, key_file = document.get("name"), document.get("key_file")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{path}: name: the witness's key name is required, such as "
                          "\"witness.partner.example/w1\"")
    if not isinstance(key_file, str) or not key_file:
        raise ConfigError(f"{path}: key_file: the path of the witness key is required")
    return WitnessConfig(name, path.parent / key_file, _logs(path, document.get("log")))


def _logs(path: Path, tables: object) -> dict[str, tuple[NoteVerifier, ...]]:
    if not isinstance(tables, list) or not tables:
        raise ConfigError(f"{path}: at least one [[log]] table (vkey = \"...\") is required")
    logs: dict[str, list[NoteVerifier]] = {}
    for number, table in enumerate(tables, start=1):
        where = f"{path}: [[log]] number {number}"
        if not isinstance(table, dict) or set(table) - _LOG_KEYS or "vkey" not in table:
            raise ConfigError(f"{where}: expected vkey = \"...\" and optionally origin")
        vkey, origin = table["vkey"], table.get("origin")
        if not isinstance(vkey, str) or (origin is not None and not isinstance(origin, str)):
            raise ConfigError(f"{where}: vkey and origin are strings")
        try:
            verifier = NoteVerifier.from_key_string(vkey)
        except AuditError as exc:
            raise ConfigError(f"{where}: {exc.diagnostics()}") from exc
        chosen = origin or verifier.name
        if not chosen or "\n" in chosen:
            raise ConfigError(f"{where}: origin must be a non-empty single line")
        logs.setdefault(chosen, []).append(verifier)
    return {origin: tuple(verifiers) for origin, verifiers in logs.items()}
