"""The last successful verification, kept in a file beside the database.

``blindpost audit verify`` continues from it (:func:`gateway.audit.verify.verify_from`),
so a daily run costs what was appended since the day before; ``--full`` ignores it. The
file names the verifier key it was made with: a verification with another key starts
over. A missing, unreadable or foreign file means a full verification, never an error.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from gateway.audit.verify import VerifiedState


def read_verified_state(path: Path, *, key: str) -> VerifiedState | None:
    """The state kept in ``path`` by a verification with verifier ``key``, if any."""
    try:
        kept = json.loads(path.read_text(encoding="utf-8"))
        if kept["key"] != key:
            return None
        return VerifiedState(int(kept["size"]), bytes.fromhex(kept["root"]),
                             int(kept["checkpoint_id"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def keep_verified_state(path: Path, state: VerifiedState, *, key: str) -> None:
    """Replace the file's state with ``state`` (atomically, mode 0600)."""
    text = json.dumps({"size": state.size, "root": state.root.hex(),
                       "checkpoint_id": state.checkpoint_id, "key": key})
    temporary = path.with_name(path.name + ".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    temporary.replace(path)
