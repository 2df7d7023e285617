"""Opt-in per account, planning messages from the audit log, and sending them.

Planning reads the audit entries appended since the last round (uploads, proposals,
alarms) once per ``notify_interval_seconds``: one message per partner with files
waiting, one digest per admin. Whichever node advances the planner's cursor with its
conditional UPDATE plans the round; the others find the cursor moved and plan nothing.
The messages go into the outbox in that same transaction. Sending claims one row at a
time with a conditional UPDATE (a lease), talks to the relay outside any transaction,
and records the outcome; a failure waits twice as long as the one before, and after
``notify_max_attempts`` the message is given up (audited). Nothing here runs inside a
transfer, so a relay that is down costs a transfer nothing.
"""

from __future__ import annotations

import json
import logging
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from gateway.actors import Actor
from gateway.audit import AuditTag
from gateway.audit.events import parse_time
from gateway.audit.log import entries
from gateway.authz import Permission
from gateway.db.models import Account, Partner, Role, Transfer, TransferState
from gateway.errors import (
    AuthorizationError,
    ConfigError,
    ConflictError,
    NotFoundError,
    RateLimitedError,
    UsageError,
)
from gateway.integrity import IntegrityViolationError
from gateway.ledger import ADDRESS_CODES_KEPT
from gateway.notify.delivery import DeliveryError, Mail, post_webhook, send_mail
from gateway.notify.messages import (
    WATCHED_TAGS,
    Message,
    Notice,
    admin_digest,
    files_waiting,
    notice,
    passkey_added,
)
from gateway.notify.models import (
    NotificationCursor,
    NotificationOutbox,
    NotificationSubscription,
    NotificationVerification,
)
from gateway.notify.settings import check_address
from gateway.state_keys import StateKeys

if TYPE_CHECKING:
    from gateway.app import App

log = logging.getLogger(__name__)

EMAIL = "email"
WEBHOOK = "webhook"
CURSOR = "audit"
# Which roles hear what: a partner's people of its files, admins of approvals and alarms.
NOTIFIED_ROLES = (Role.PARTNER, Role.ADMIN)
RETRY_BASE_SECONDS = 60
RETRY_MAX_SECONDS = 3600
RATE_WINDOW = timedelta(hours=1)
# Sent and given-up rows are kept this long (the rate limit looks back one hour).
KEEP_DONE = timedelta(days=1)
# A code sent to confirm an address: its digits, how long it works, how many tries.
VERIFY_DIGITS = 8
VERIFY_LIFETIME = timedelta(minutes=30)
VERIFY_ATTEMPTS = 5
# How often an account may have such a code mailed: at most VERIFY_SENDS an hour, and
# VERIFY_COOLDOWN apart, so that neither a held-down button nor a script makes the
# gateway mail codes to an address that never asked. Counted from the log (Ledger), so
# deleting a row lifts nothing.
VERIFY_SENDS = ADDRESS_CODES_KEPT
VERIFY_WINDOW = timedelta(hours=1)
VERIFY_COOLDOWN = timedelta(minutes=1)
# At most this many messages per delivery pass: a long backlog drains over several ticks.
BATCH = 50


@dataclass(frozen=True)
class Subscription:
    """An account's notification setting, as its owner or an admin sees it."""

    username: str
    email: str | None


@dataclass(frozen=True)
class DeliveryReport:
    """What one delivery pass did."""

    sent: int = 0
    failed: int = 0
    deferred: int = 0
    dropped: int = 0


class _LostRaceError(Exception):
    """Another node advanced the planner's cursor first."""


class NotificationService:
    """Notification opt-ins, the planner and the sender of one installation."""

    def __init__(self, app: App) -> None:
        self._app = app
        self._settings = app.settings
        self._actor = Actor.system("notify")

    @property
    def enabled(self) -> bool:
        """Whether a relay or a webhook is configured."""
        return bool(self._settings.notify_smtp_host or self._settings.notify_webhook_url)

    # Opt-in, per account -------------------------------------------------------------

    def request_address(self, actor: Actor, *, username: str, email: str) -> datetime:
        """Send a code to ``email``; the address is used once the account's holder types
        it (:meth:`confirm_address`), whether they or an admin gave it. Return until when
        the code works (audited without the address). Refused with
        :class:`RateLimitedError` (audited) past :data:`VERIFY_SENDS` codes an hour or
        within :data:`VERIFY_COOLDOWN` of the last."""
        try:
            address = check_address(email.strip(), key="e-mail address")
        except ConfigError as exc:
            raise UsageError(exc.diagnostics()) from None
        if not self._settings.notify_smtp_host:
            raise UsageError("no relay is configured (notify_smtp_host), so no code can be "
                             "sent to confirm the address")
        account_id, role = self._target(actor, username)
        if role not in NOTIFIED_ROLES:
            raise UsageError(f"account {username!r} is {role.value}: only partner accounts "
                             "and admins receive notifications")
        code = f"{secrets.randbelow(10 ** VERIFY_DIGITS):0{VERIFY_DIGITS}d}"
        code_hash = self._app.state_keys.mac("row", _verify_message(account_id, address, code))
        now = self._app.clock()
        until = self._reserve_code(actor, username, account_id, address, code_hash, now)
        mail = Mail(to=address, subject="Blindpost: confirm this address",
                    body=(f"Your code: {code}\n\nType it on your Blindpost account page "
                          f"within {VERIFY_LIFETIME.seconds // 60} minutes to receive "
                          f"notifications for {username} here. If you did not ask for "
                          "this, ignore this message: nothing is sent to this address "
                          "without the code.\n"))
        try:
            send_mail(self._settings, mail, now=now)
        except DeliveryError as exc:
            # DeliveryError reasons never name the address (gateway.notify.delivery).
            log.warning("address code for %s not sent: %s", username, exc.diagnostics())
            with self._app.transaction() as session:
                # The code nobody received waits for nothing (unless a newer one
                # replaced it); the send still counts toward the limit.
                session.execute(delete(NotificationVerification).where(
                    NotificationVerification.account_id == account_id,
                    NotificationVerification.code_hash == code_hash))
                self._record(session, AuditTag.NOTIFY_VERIFY_FAILURE, actor, username,
                             {"channel": EMAIL, "reason": "not sent"})
            raise UsageError("the code could not be sent (the relay refused or is "
                             "unreachable); check the address or try again later") from None
        return until

    def _reserve_code(self, actor: Actor, username: str, account_id: int, address: str,
                      code_hash: str, now: datetime) -> datetime:
        """Record the code about to be mailed and return until when it works, or refuse
        it (audited) past the limit.

        Recorded before the mail goes out, and counted under the log's lock: of requests
        sent at once each sees the ones before it, so none slips past the limit.
        """
        until = now + VERIFY_LIFETIME
        with self._app.transaction() as session:
            self._app.audit.lock(session)
            retry_at = _next_code_at(self._app.ledger.address_codes(username, session), now)
            if retry_at is None:
                session.merge(NotificationVerification(
                    account_id=account_id, email=address, expires_at=until, attempts=0,
                    code_hash=code_hash))
                self._record(session, AuditTag.NOTIFY_VERIFY_SENT, actor, username,
                             {"channel": EMAIL, "expires_at": until.isoformat()})
                return until
            self._record(session, AuditTag.NOTIFY_VERIFY_LIMITED, actor, username,
                         {"channel": EMAIL, "retry_at": retry_at.isoformat()})
        raise RateLimitedError(
            f"too many codes asked for: at most {VERIFY_SENDS} an hour, "
            f"{VERIFY_COOLDOWN.seconds // 60} minute apart; ask again after "
            f"{retry_at.strftime('%H:%M:%S UTC')}", retry_at=retry_at)

    def confirm_address(self, actor: Actor, *, username: str, code: str) -> Subscription:
        """Turn notifications on for the address a code was sent to, if ``code`` is it and
        ``actor`` is the account's holder."""
        account_id, _ = self._target(actor, username)
        error: UsageError | AuthorizationError
        with self._app.transaction() as session:
            now = self._app.clock()
            # Locked: of two confirmations at once, the second reads the first's count of
            # wrong codes, so none goes uncounted toward VERIFY_ATTEMPTS.
            row = session.get(NotificationVerification, account_id, with_for_update=True)
            if actor.account_id != account_id:
                # The code proves that the address reaches the account's holder only when
                # the holder types it: an admin who set the address, or who was told the
                # code, could otherwise send someone's notifications anywhere.
                reason = "not the account's holder"
                error = AuthorizationError(f"only {username} can confirm their address, "
                                           "on their own account page")
            elif row is None or row.expires_at <= now:
                reason = "no code pending" if row is None else "expired"
                error = UsageError("no address is waiting for a code, or its code expired: "
                                   "enter the address again")
            elif not self._app.state_keys.check_mac(
                    "row", _verify_message(account_id, row.email, code.strip()),
                    row.code_hash):
                row.attempts += 1
                reason = "wrong code"
                error = UsageError("that is not the code sent to the address")
                if row.attempts >= VERIFY_ATTEMPTS:
                    session.delete(row)
                    error = UsageError("too many wrong codes: enter the address again for "
                                       "a new one")
            else:
                address, changed = row.email, self._set_address(session, account_id,
                                                                row.email, now)
                session.delete(row)
                self._record(session, AuditTag.NOTIFY_SUBSCRIBE, actor, username,
                             {"channel": EMAIL, "changed": changed, "verified": True})
                return Subscription(username, address)
            if reason == "expired" and row is not None:
                session.delete(row)
            self._record(session, AuditTag.NOTIFY_VERIFY_FAILURE, actor, username,
                         {"channel": EMAIL, "reason": reason})
        error.audited = True
        raise error

    def pending_address(self, actor: Actor, *, username: str) -> str | None:
        """The address waiting for its code, if one is (shown to its owner)."""
        account_id, _ = self._target(actor, username, write=False)
        with self._app.read() as session:
            row = session.get(NotificationVerification, account_id)
            return None if row is None or row.expires_at <= self._app.clock() else row.email

    def _set_address(self, session: Session, account_id: int, address: str,
                     now: datetime) -> bool:
        row = session.get(NotificationSubscription, account_id)
        if row is not None and not self._app.integrity.holds(session, row):
            # A forged or restored address is replaced, never edited: editing would
            # vouch for it (gateway.integrity); the alarm is raised all the same.
            session.delete(row)
            session.flush()
            row = None
        if row is None:
            session.add(NotificationSubscription(account_id=account_id, email=address,
                                                 created_at=now))
            return False
        row.email = address
        return True

    def unsubscribe(self, actor: Actor, *, username: str) -> bool:
        """Stop ``username``'s notifications and forget the address; False if none were on."""
        account_id, _ = self._target(actor, username)
        with self._app.transaction() as session:
            removed = bool(session.execute(delete(NotificationSubscription).where(
                NotificationSubscription.account_id == account_id)).rowcount)  # type: ignore[attr-defined]  # A CursorResult.
            if removed:
                self._record(session, AuditTag.NOTIFY_UNSUBSCRIBE, actor, username,
                             {"channel": EMAIL})
        return removed

    def subscription(self, actor: Actor, *, username: str) -> Subscription:
        """``username``'s setting (the account itself or whoever may read accounts)."""
        account_id, _ = self._target(actor, username, write=False)
        with self._app.read() as session:
            row = session.get(NotificationSubscription, account_id)
            return Subscription(username, row.email if row else None)

    def send_test(self, actor: Actor, *, username: str) -> str:
        """Send a test e-mail to ``username``'s address now, past the outbox, so that
        whoever sets up the relay sees its answer; return the address (audited)."""
        if not self._settings.notify_smtp_host:
            raise UsageError("no relay is configured: set notify_smtp_host and "
                             "notify_smtp_from first")
        account_id, _ = self._target(actor, username)
        with self._app.read() as session:
            row = session.get(NotificationSubscription, account_id)
            address = row.email if row else None
        if address is None:
            raise UsageError(f"notifications for {username} are off: turn them on with an "
                             "address first")
        mail = Mail(to=address, subject="Blindpost: test notification",
                    body="This is a test: notifications from Blindpost reach you.\n")
        now = self._app.clock()
        encrypted = send_mail(self._settings, mail, now=now)
        with self._app.transaction() as session:
            self._record(session, AuditTag.NOTIFY_SENT, actor, username,
                         {"channel": EMAIL, "account": username, "topic": "test",
                          "attempt": 1, "encrypted": encrypted})
        return address

    def _target(self, actor: Actor, username: str, *, write: bool = True
                ) -> tuple[int, Role]:
        """The account's id and role, once ``actor`` may change (or read) its setting:
        checked before any write transaction, as a refusal is audited in one of its own."""
        with self._app.read() as session:
            found = session.execute(select(Account.id, Account.role).where(
                Account.username == username)).first()
        if found is None or actor.account_id != found.id:
            permission = Permission.ACCOUNT_MANAGE if write else Permission.ACCOUNT_READ
            self._app.authz.require(actor, permission, subject=f"account:{username}")
        if found is None:
            raise NotFoundError(f"no account named {username!r}")
        return found.id, Role(found.role)

    def _record(self, session: Session, tag: AuditTag, actor: Actor, username: str,
                details: dict[str, object]) -> None:
        self._app.audit.record(session, tag=tag, actor=actor, subject=f"account:{username}",
                               details=details)

    # Planning --------------------------------------------------------------------------

    def plan(self) -> int:
        """Queue the messages of a round if one is due; return how many were queued."""
        if not self.enabled:
            return 0
        now = self._app.clock()
        try:
            with self._app.transaction() as session:
                cursor = session.get(NotificationCursor, CURSOR)
                if cursor is None:
                    # The first round starts from now: switching notifications on does not
                    # send the whole history.
                    session.add(NotificationCursor(name=CURSOR, position=_log_size(session),
                                                   planned_at=now))
                    return 0
                interval = timedelta(seconds=self._settings.notify_interval_seconds)
                if now < cursor.planned_at + interval:
                    return 0
                return self._plan_round(session, cursor.position, cursor.planned_at, now)
        except (_LostRaceError, ConflictError):
            return 0

    def _plan_round(self, session: Session, position: int, planned_at: datetime,
                    now: datetime) -> int:
        end = _log_size(session)
        advanced = session.execute(
            update(NotificationCursor)
            .where(NotificationCursor.name == CURSOR, NotificationCursor.position == position,
                   NotificationCursor.planned_at == planned_at)
            .values(position=end, planned_at=now)
            .execution_options(synchronize_session=False))
        if advanced.rowcount != 1:  # type: ignore[attr-defined]  # A CursorResult.
            raise _LostRaceError
        partners: dict[str, None] = {}
        notices: list[Notice] = []
        queued = 0
        for index, tag, leaf in session.execute(
                select(entries.c.idx, entries.c.tag, entries.c.leaf)
                .where(entries.c.idx >= position, entries.c.idx < end,
                       entries.c.tag.in_([t.value for t in WATCHED_TAGS]))
                .order_by(entries.c.idx)):
            event = _decode(leaf)
            details = event.get("details")
            details = details if isinstance(details, dict) else {}
            if tag == AuditTag.UPLOAD_COMPLETE.value:
                if isinstance(details.get("partner"), str):
                    partners[details["partner"]] = None
            elif tag == AuditTag.ACCOUNT_PASSKEY_ADD.value:
                queued += self._queue_own(session, str(event.get("subject", "")),
                                          str(event.get("time", "")), now)
            elif (found := notice(index, tag, details,
                                  actor=str(event.get("actor", "")))) is not None:
                notices.append(found)
        queued += sum(self._queue_files(session, slug, now) for slug in partners)
        if notices:
            queued += self._queue_digests(session, notices, now)
        return queued

    def _queue_digests(self, session: Session, notices: list[Notice], now: datetime) -> int:
        """One digest per opted-in admin, leaving out what they proposed themselves (they
        cannot approve it), and one with everything for the webhook."""
        queued = 0
        if self._settings.notify_smtp_host:
            for account_id, username in self._admins(session):
                theirs = [n for n in notices if n.actor != username]
                if theirs:
                    queued += self._queue(session, admin_digest(theirs), [account_id], now,
                                          channels=(EMAIL,))
        if self._settings.notify_webhook_url:
            queued += self._queue(session, admin_digest(notices), [], now,
                                  channels=(WEBHOOK,))
        return queued

    def _queue_files(self, session: Session, slug: str, now: datetime) -> int:
        partner_id = session.scalar(select(Partner.id).where(Partner.slug == slug,
                                                             Partner.disabled.is_(False)))
        if partner_id is None:
            return 0
        count, first = session.execute(
            select(func.count(Transfer.id), func.min(Transfer.expires_at))
            .where(Transfer.partner_id == partner_id,
                   Transfer.state == TransferState.AVAILABLE,
                   Transfer.expires_at > now)).one()
        if not count:
            return 0  # Fetched or withdrawn before the round: nothing waits any more.
        people = list(session.scalars(
            select(Account.id).join(NotificationSubscription,
                                    NotificationSubscription.account_id == Account.id)
            .where(Account.role == Role.PARTNER, Account.partner_id == partner_id,
                   Account.disabled.is_(False))))
        return self._queue(session, files_waiting(slug, count=count, first_expiry=first),
                           people, now)

    def _queue_own(self, session: Session, subject: str, time: str, now: datetime) -> int:
        """Tell an account (if it opted in) of a passkey added to it; e-mail only, as the
        webhook speaks for the registry, not for one person."""
        kind, _, username = subject.partition(":")
        account_id = session.scalar(
            select(Account.id).join(NotificationSubscription,
                                    NotificationSubscription.account_id == Account.id)
            .where(Account.username == username, Account.disabled.is_(False)))
        if kind != "account" or account_id is None:
            return 0
        try:
            at = parse_time(time)
        except ValueError:
            at = now
        return self._queue(session, passkey_added(username, at=at), [account_id], now,
                           channels=(EMAIL,))

    def _admins(self, session: Session) -> list[tuple[int, str]]:
        return [(row.id, row.username) for row in session.execute(
            select(Account.id, Account.username)
            .join(NotificationSubscription, NotificationSubscription.account_id == Account.id)
            .where(Account.role == Role.ADMIN, Account.disabled.is_(False)))]

    def _queue(self, session: Session, message: Message, people: list[int],
               now: datetime, *, channels: tuple[str, ...] = (EMAIL, WEBHOOK)) -> int:
        recipients: list[tuple[str, int | None]] = []
        if self._settings.notify_smtp_host and EMAIL in channels:
            recipients += [(EMAIL, account_id) for account_id in people]
        if self._settings.notify_webhook_url and WEBHOOK in channels:
            recipients.append((WEBHOOK, None))
        for channel, account_id in recipients:
            if message.supersedes:
                # Up-to-date counts replace unsent old ones: a relay that is down for a
                # day leaves one message per partner waiting, not one per round.
                session.execute(delete(NotificationOutbox).where(
                    NotificationOutbox.topic == message.topic,
                    NotificationOutbox.channel == channel,
                    _same_account(account_id),
                    NotificationOutbox.sent_at.is_(None),
                    NotificationOutbox.gave_up_at.is_(None)))
            body = message.body()
            session.add(NotificationOutbox(
                channel=channel, account_id=account_id, topic=message.topic,
                subject=message.subject, body=body, created_at=now,
                next_attempt_at=now, attempts=0,
                seal=outbox_mac(self._app.state_keys, channel=channel, account_id=account_id,
                                topic=message.topic, subject=message.subject, body=body)))
        return len(recipients)

    # Sending ---------------------------------------------------------------------------

    def deliver(self) -> DeliveryReport:
        """Send what is due, each message claimed by one node; forget old sent rows."""
        if not self.enabled:
            return DeliveryReport()
        now = self._app.clock()
        with self._app.transaction() as session:
            session.execute(delete(NotificationOutbox).where(
                func.coalesce(NotificationOutbox.sent_at, NotificationOutbox.gave_up_at)
                < now - KEEP_DONE))
            due = session.execute(
                select(NotificationOutbox.id, NotificationOutbox.channel)
                .where(NotificationOutbox.sent_at.is_(None),
                       NotificationOutbox.gave_up_at.is_(None),
                       NotificationOutbox.next_attempt_at <= now)
                .order_by(NotificationOutbox.id).limit(BATCH)).all()
        counts = {"sent": 0, "failed": 0, "deferred": 0, "dropped": 0}
        failing: set[str] = set()
        for message_id, channel in due:
            if channel in failing:
                # After one failure the rest of the channel waits for the next tick: a
                # relay that times out costs the housekeeping loop (and its checkpoints)
                # one timeout per pass, not one per queued message.
                continue
            outcome = self._deliver_one(message_id)
            if outcome:
                counts[outcome] += 1
            if outcome == "failed":
                failing.add(channel)
        return DeliveryReport(**counts)

    def _deliver_one(self, message_id: int) -> str | None:
        now = self._app.clock()
        with self._app.transaction() as session:
            claimed = self._claim(session, message_id, now)
            if claimed is None:
                return None  # Another node has it, or it was sent or replaced meanwhile.
            row, username, address = claimed
            if not self._genuine(session, row):
                row.gave_up_at, row.claimed_until = now, None
                return "dropped"
            if row.channel == EMAIL and address is None:
                # Opted out (or disabled) since it was queued: the message goes too.
                session.delete(row)
                return "dropped"
            if self._rate_limited(session, row, now):
                return "deferred"
            channel, subject, body = row.channel, row.subject, row.body
        try:
            encrypted = self._send(channel, address, subject, body, now)
        except (DeliveryError, ConfigError) as exc:
            self._failed(message_id, username, exc.diagnostics())
            return "failed"
        self._sent(message_id, username, encrypted=encrypted)
        return "sent"

    def _claim(self, session: Session, message_id: int, now: datetime
               ) -> tuple[NotificationOutbox, str | None, str | None] | None:
        lease = timedelta(seconds=3 * self._settings.notify_timeout_seconds + 30)
        taken = session.execute(
            update(NotificationOutbox)
            .where(NotificationOutbox.id == message_id,
                   NotificationOutbox.sent_at.is_(None),
                   NotificationOutbox.gave_up_at.is_(None),
                   NotificationOutbox.next_attempt_at <= now,
                   (NotificationOutbox.claimed_until.is_(None))
                   | (NotificationOutbox.claimed_until < now))
            .values(claimed_until=now + lease)
            .execution_options(synchronize_session=False))
        if taken.rowcount != 1:  # type: ignore[attr-defined]  # A CursorResult.
            return None
        row = session.get(NotificationOutbox, message_id, populate_existing=True)
        assert row is not None
        if row.account_id is None:
            return row, None, None
        found = session.execute(
            select(Account.username, Account.disabled)
            .where(Account.id == row.account_id)).first()
        if found is None:
            return row, None, None
        opted = session.get(NotificationSubscription, row.account_id)
        # The address decides where the message goes: only one the gateway sealed, and
        # the current version of it (an address its owner replaced, put back, is not).
        if opted is not None and not self._app.integrity.holds(session, opted):
            opted = None
        return row, found.username, None if found.disabled or opted is None else opted.email

    def _genuine(self, session: Session, row: NotificationOutbox) -> bool:
        """Whether the gateway queued ``row`` as it stands (its MAC holds); one written
        behind its back is never sent, and is an integrity violation."""
        expected = (row.channel, row.account_id, row.topic, row.subject, row.body)
        if row.seal and self._app.state_keys.check_mac(
                "row", _outbox_message(*expected), row.seal):
            return True
        self._app.integrity.record(session, IntegrityViolationError(
            "notification_outbox", str(row.id), "no seal" if not row.seal
            else "seal does not match"))
        return False

    def _rate_limited(self, session: Session, row: NotificationOutbox, now: datetime) -> bool:
        """Hold the message back if its recipient had the hour's share already."""
        window = (select(NotificationOutbox.sent_at)
                  .where(NotificationOutbox.channel == row.channel,
                         _same_account(row.account_id),
                         NotificationOutbox.sent_at > now - RATE_WINDOW)
                  .order_by(NotificationOutbox.sent_at))
        sent = list(session.scalars(window))
        if len(sent) < self._settings.notify_max_per_hour:
            return False
        oldest = sent[-self._settings.notify_max_per_hour]
        assert oldest is not None
        row.next_attempt_at = oldest + RATE_WINDOW
        row.claimed_until = None
        log.info("notification %d held back until %s: its recipient had %d this hour",
                 row.id, row.next_attempt_at.isoformat(), len(sent))
        return True

    def _send(self, channel: str, address: str | None, subject: str, body: str,
              now: datetime) -> bool:
        """Hand the message over; return whether it travelled encrypted."""
        if channel == WEBHOOK:
            post_webhook(self._settings, body.encode(), now=now)
            return True
        assert address is not None
        text = json.loads(body)["text"]
        return send_mail(self._settings, Mail(to=address, subject=subject, body=text),
                         now=now)

    def _sent(self, message_id: int, username: str | None, *, encrypted: bool) -> None:
        now = self._app.clock()
        with self._app.transaction() as session:
            row = session.get(NotificationOutbox, message_id)
            if row is None:
                return
            row.sent_at, row.claimed_until = now, None
            row.attempts += 1
            if not encrypted:
                log.warning("insecure_notify_smtp_without_tls: notification %d went to the "
                            "local relay unencrypted", message_id)
                self._app.audit.record(
                    session, tag=AuditTag.SETTING_INSECURE_USE, actor=self._actor,
                    subject="setting:insecure_notify_smtp_without_tls",
                    details={"notification": message_id})
            self._app.audit.record(session, tag=AuditTag.NOTIFY_SENT, actor=self._actor,
                                   subject=f"notification:{message_id}",
                                   details={**self._outcome(row, username),
                                            "encrypted": encrypted})

    def _failed(self, message_id: int, username: str | None, reason: str) -> None:
        now = self._app.clock()
        with self._app.transaction() as session:
            row = session.get(NotificationOutbox, message_id)
            if row is None:
                return
            row.attempts += 1
            row.claimed_until, row.last_error = None, reason[:200]
            final = row.attempts >= self._settings.notify_max_attempts
            if final:
                row.gave_up_at = now
            else:
                wait = min(RETRY_BASE_SECONDS * 2 ** (row.attempts - 1), RETRY_MAX_SECONDS)
                row.next_attempt_at = now + timedelta(seconds=wait)
            log.warning("notification %d (%s) not sent, attempt %d: %s; %s", message_id,
                        row.channel, row.attempts, reason,
                        "giving up" if final else f"retrying at {row.next_attempt_at:%H:%M:%S}")
            self._app.audit.record(session, tag=AuditTag.NOTIFY_FAILURE, actor=self._actor,
                                   subject=f"notification:{message_id}",
                                   details={**self._outcome(row, username), "reason": reason,
                                            "final": final})

    @staticmethod
    def _outcome(row: NotificationOutbox, username: str | None) -> dict[str, object]:
        return {"channel": row.channel, "account": username, "topic": row.topic,
                "attempt": row.attempts}

    def run_once(self) -> DeliveryReport:
        """One turn of the chore: plan a round if due, then send what is due."""
        self.plan()
        return self.deliver()


def _next_code_at(sent: list[datetime], now: datetime) -> datetime | None:
    """When another address code may be mailed, given when the latest were (oldest
    first); None if now."""
    waits = [sent[-1] + VERIFY_COOLDOWN] if sent else []
    if len(sent) >= VERIFY_SENDS:
        waits.append(sent[-VERIFY_SENDS] + VERIFY_WINDOW)
    later = [moment for moment in waits if moment > now]
    return max(later) if later else None


def _verify_message(account_id: int, address: str, code: str) -> bytes:
    return f"blindpost notification address\n{account_id}\n{address}\n{code}".encode()


def _outbox_message(channel: str, account_id: int | None, topic: str, subject: str,
                    body: str) -> bytes:
    document = {"table": "notification_outbox", "channel": channel, "account": account_id,
                "topic": topic, "subject": subject, "body": body}
    # A prefix no sealed row's message has (those begin with "{").
    return b"blindpost notification\n" + json.dumps(document, sort_keys=True).encode()


def outbox_mac(keys: StateKeys, *, channel: str, account_id: int | None, topic: str,
               subject: str, body: str) -> str:
    """The MAC a queued message carries: over where it goes and what it says."""
    return keys.mac("row", _outbox_message(channel, account_id, topic, subject, body))


def _log_size(session: Session) -> int:
    last = session.execute(select(func.max(entries.c.idx))).scalar()
    return 0 if last is None else int(last) + 1


def _decode(leaf: str) -> dict[str, Any]:
    try:
        decoded = json.loads(leaf)
    except ValueError:
        return {}
    return decoded if isinstance(decoded, dict) else {}


def _same_account(account_id: int | None) -> Any:
    column = NotificationOutbox.account_id
    return column.is_(None) if account_id is None else column == account_id
