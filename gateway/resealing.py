"""Sealing rows anew: adopting an installation from before signed state, rotating the key.

Both walk every sealed row in one transaction. Adoption trusts the database once, when
``blindpost init --force`` creates the state key for an installation that had none;
rotation trusts only rows whose seal verifies with the old key, and refuses to start if
any does not. Each writes a checkpoint first, so the audit entries made under the old
key (or before entry MACs existed) are covered by a signature rather than by a MAC.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from gateway import state_keys
from gateway.actors import Actor
from gateway.audit import AuditTag
from gateway.authz import Permission
from gateway.db.engine import snapshot
from gateway.db.models import TOTPSecret
from gateway.errors import PolicyError
from gateway.integrity import (
    KEYS_INFO,
    SEALED_FIELDS,
    decrypt_totp,
    digest_of,
    encrypt_totp,
    is_valid,
    record_rows,
    row_label,
    seal,
    table_of,
)
from gateway.ledger import encode_row
from gateway.state_keys import StateKeys

if TYPE_CHECKING:
    from gateway.app import App

log = logging.getLogger(__name__)
_SEALED_PREFIX = f"{state_keys.VERSION}."


@dataclass(frozen=True)
class Resealed:
    """What an adoption or a rotation sealed."""

    rows: int
    old_key: str | None
    new_key: str


def _all_rows(session: Session) -> list[object]:
    return [row for model in SEALED_FIELDS for row in session.scalars(select(model))]


def adopt(app: App) -> Resealed:
    """Seal every row of an installation that had no state key, trusting it as it is.

    Only ``blindpost init --force`` calls this, right after creating the key: a key
    file that exists already means the database was sealed, and unsealed rows in it are
    forgeries.
    """
    keys = app.state_keys
    with app.sessions.begin() as session:
        # Sealed here by hand: the flush hooks would refuse to change unsealed rows.
        session.info[KEYS_INFO] = None
        app.audit.checkpoint(session)
        rows = _all_rows(session)
        for row in rows:
            if isinstance(row, TOTPSecret) and not row.secret.startswith(_SEALED_PREFIX):
                row.secret = encrypt_totp(keys, account_id=row.account_id, secret=row.secret)
            seal(keys, row)  # type: ignore[arg-type]  # Every row here is a sealed model.
        # Trusted as they are: these versions are current from here on.
        record_rows(session, [encode_row(table_of(row), row_label(row), digest_of(row))  # type: ignore[arg-type]  # Sealed models.
                              for row in rows], changed=True)
        app.audit.record(session, tag=AuditTag.INTEGRITY_ADOPT, actor=Actor.local_operator(),
                         subject="integrity:state", details={"rows": len(rows),
                                                            "key": keys.current.key_id})
    return Resealed(len(rows), None, keys.current.key_id)


def rotate(app: App, actor: Actor) -> Resealed:
    """Replace the state key: verify every row with the old key, seal it with the new one.

    Refused (with every failing row listed) if any row fails: a forged row must be
    resolved first, or the rotation would vouch for it.
    """
    app.authz.require(actor, Permission.INTEGRITY_ADMIN)
    keys_dir = app.settings.keys_dir
    app.state_keys  # noqa: B018  # Registers this process first: the lock below excludes it.
    with state_keys.rotation_lock(keys_dir, exclusive=True):
        return _rotate(app, actor, keys_dir)


def _rotate(app: App, actor: Actor, keys_dir: Path) -> Resealed:
    # A running process keeps the key it loaded: it would refuse every row sealed with
    # the new one as forged, and seal its own writes with the old one. So the rotation
    # waits for them to stop (on every node: the others' processes are not visible here).
    users = state_keys.other_users(keys_dir)
    if users:
        raise PolicyError("the state key was not rotated: these processes use it and would "
                          "keep the old key: " + ", ".join(users) + ". Stop the gateway's "
                          "services (on every node) and rotate again")
    report = app.integrity.check(actor)
    if not report.ok:
        raise PolicyError("the state key was not rotated: these rows fail their seal: "
                          + "; ".join(str(finding) for finding in report.findings))
    old = app.state_keys
    following = StateKeys(state_keys.begin_rotation(keys_dir), (old.current,))
    try:
        count = _reseal(app, actor, old, following)
    except BaseException:
        app.audit.entry_keys = old
        state_keys.abandon_rotation(keys_dir)
        raise
    state_keys.finish_rotation(keys_dir)
    app.state_keys = StateKeys(following.current)
    app.audit.entry_keys = app.state_keys
    return Resealed(count, old.current.key_id, following.current.key_id)


def _reseal(app: App, actor: Actor, old: StateKeys, following: StateKeys) -> int:
    with app.sessions.begin() as session:
        session.info[KEYS_INFO] = lambda: following
        # From here on entries carry MACs under the new key; the checkpoint covers those
        # made under the old one.
        app.audit.entry_keys = following
        app.audit.checkpoint(session)
        rows = _all_rows(session)
        for row in rows:
            if not is_valid(old, row):  # type: ignore[arg-type]  # A sealed model.
                raise PolicyError(f"a row changed during the rotation: {row!r}")
            if isinstance(row, TOTPSecret):
                secret = decrypt_totp(old, account_id=row.account_id, stored=row.secret)
                row.secret = encrypt_totp(following, account_id=row.account_id, secret=secret)
            seal(following, row)  # type: ignore[arg-type]  # A sealed model.
        app.audit.record(session, tag=AuditTag.INTEGRITY_KEY_ROTATE, actor=actor,
                         subject="integrity:state",
                         details={"rows": len(rows), "old_key": old.current.key_id,
                                  "new_key": following.current.key_id})
    return len(rows)


def finish_interrupted_rotation(app: App, keys: StateKeys) -> StateKeys:
    """Settle a rotation that stopped between its commit and its key-file rename.

    The rows tell which key is in use: the new one if the rotation's transaction
    committed (then the rename is finished), the old one otherwise (the new key is
    forgotten).
    """
    # A read-only snapshot: this may run inside another transaction that holds SQLite's
    # write lock (the keys are loaded on first use).
    with snapshot(app.engine) as session:
        seal_value = session.execute(text(
            "SELECT seal FROM accounts WHERE seal IS NOT NULL LIMIT 1")).scalar()
    following = [key_id for key_id in keys.key_ids if key_id != keys.current.key_id]
    keys_dir = app.settings.keys_dir
    if seal_value and StateKeys.key_id_of(seal_value) in following:
        log.warning("finishing a state key rotation that was interrupted after its commit")
        state_keys.finish_rotation(keys_dir)
        return StateKeys(keys.key(following[0]))
    log.warning("forgetting the next state key of a rotation that never committed")
    state_keys.abandon_rotation(keys_dir)
    return StateKeys(keys.current)
