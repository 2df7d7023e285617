"""What a destructive action would do, stated before it is done.

The console's confirmation pages and the CLI's prompts read the same sentences from
here ("this purges 3 waiting files for uni-research"), so both adapters say the same.
A preview decides nothing: the service that acts checks every rule again in its own
transaction, and refuses there what is refused here (the guards run in both, so a
confirmation page never offers what would be refused).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from gateway.accounts import PASSWORD_ROLES, get_account
from gateway.actors import Actor
from gateway.authz import Permission
from gateway.db.models import MAX_INTEGER, KeyState, PartnerKey, Role, Transfer, TransferState
from gateway.errors import ConflictError, NotFoundError, PolicyError
from gateway.partner_keys import approved_keys
from gateway.partners import get_partner

if TYPE_CHECKING:
    from gateway.app import App


@dataclass(frozen=True)
class Consequence:
    """An action, what it does, and how many waiting files it purges."""

    action: str
    effects: tuple[str, ...]
    purges: int = 0
    # Whether the CLI asks before acting (the console always shows the step): a revoke
    # that leaves other approved keys in force changes no delivery and is not asked.
    asks: bool = True

    def text(self) -> str:
        """One paragraph: the action, then each effect."""
        return f"{self.action}: " + "; ".join(self.effects) + "."


def _files(count: int) -> str:
    return f"{count} waiting file{'' if count == 1 else 's'}"


def _waiting(session: Session, partner_id: int) -> int:
    return int(session.scalar(select(func.count()).select_from(Transfer).where(
        Transfer.partner_id == partner_id, Transfer.state == TransferState.AVAILABLE)) or 0)


class ConsequenceService:
    """Previews of disabling a partner or an account, revoking a key, purging a file."""

    def __init__(self, app: App) -> None:
        self._app = app

    def partner_disable(self, actor: Actor, *, slug: str,
                        keep_waiting: bool = False) -> Consequence:
        self._app.authz.require(actor, Permission.PARTNER_MANAGE, subject=f"partner:{slug}")
        with self._app.read() as session:
            partner = get_partner(session, slug)
            if partner.disabled:
                raise ConflictError(f"partner {slug!r} is already disabled")
            waiting = _waiting(session, partner.id)
        effects = [f"its people can no longer sign in (open SFTP sessions end within "
                   f"seconds) and no upload reaches {slug}"]
        if not waiting:
            effects.append("no file is waiting for it")
        elif keep_waiting:
            effects.append(f"the {_files(waiting)} stay until they expire")
        else:
            effects.append(f"this purges {_files(waiting)} for {slug} now; they cannot be "
                           "brought back (enabling the partner again does not)")
        return Consequence(f"Disable partner {slug}", tuple(effects),
                           0 if keep_waiting else waiting)

    def key_revoke(self, actor: Actor, *, key_id: int,
                   keep_waiting: bool = False) -> Consequence:
        self._app.authz.require(actor, Permission.KEY_READ, subject=f"key:{key_id}")
        with self._app.read() as session:
            key = session.get(PartnerKey, key_id) if 1 <= key_id <= MAX_INTEGER else None
            if key is None:
                raise NotFoundError(f"unknown key id {key_id}")
            if key.state is KeyState.REVOKED:
                raise ConflictError(f"key {key_id} is already revoked")
            slug = key.partner.slug
            others = [k for k in approved_keys(session, key.partner) if k.id != key.id]
            last = key.state is KeyState.APPROVED and not others
            waiting = _waiting(session, key.partner_id) if last else 0
        effects = [f"no new file for {slug} is encrypted to key {key_id} from now on"]
        purges = 0
        if last:
            effects.append(f"it is {slug}'s last approved key: uploads to {slug} are refused "
                           "until another key is approved")
            if waiting and keep_waiting:
                effects.append(f"the {_files(waiting)} stay until they expire")
            elif waiting:
                effects.append(f"this purges {_files(waiting)} for {slug} now")
                purges = waiting
        return Consequence(f"Revoke key {key_id} of {slug}", tuple(effects), purges,
                           asks=last)

    def account_disable(self, actor: Actor, *, username: str) -> Consequence:
        self._app.authz.require(actor, Permission.ACCOUNT_MANAGE, subject=f"account:{username}")
        with self._app.read() as session:
            account = get_account(session, username)
            if account.disabled:
                raise ConflictError(f"account {username!r} is already disabled")
            if actor.account_id == account.id:
                raise PolicyError("nobody disables their own account: another admin does")
            if account.role is Role.ADMIN:
                self._app.authority.check_not_starved(session, account,
                                                      action=f"disabling {username!r}")
            role = account.role
        effects = ["they can no longer sign in anywhere, and their open sessions end within "
                   "seconds"]
        if role in PASSWORD_ROLES:
            effects.append("enabling them again takes two admins")
        return Consequence(f"Disable {role.value} account {username}", tuple(effects))

    def file_purge(self, actor: Actor, *, file_id: str) -> Consequence:
        self._app.authz.require(actor, Permission.FILE_PURGE, subject=f"file:{file_id}")
        with self._app.read() as session:
            row = session.get(Transfer, file_id)
            if row is None:
                raise NotFoundError(f"unknown file {file_id!r}")
            if row.state is not TransferState.AVAILABLE:
                raise ConflictError(f"file {file_id} is already {row.state.value}")
            name, slug = row.name, row.partner.slug
        return Consequence(f"Purge {name} for {slug}", (
            f"this deletes the ciphertext of {name} now; {slug} can no longer download it "
            "and is told it was purged",), 1)
