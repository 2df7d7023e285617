"""The notification tables: who asked for e-mail, the outbox, and the planner's cursor.

What decides where a message goes, and what it says, is the gateway's own: an opt-in is
sealed and checked for currency like a granting row (:mod:`gateway.integrity`), so a
database writer can neither add an address nor redirect one (nor put back an address its
owner replaced); a queued message carries a MAC over its recipient and text, so one
cannot be written into the outbox to be sent through the registry's relay. An address is
used only once its holder typed the code sent to it (``notification_verifications``).
"""

# No `from __future__ import annotations` here: SQLAlchemy would then evaluate every
# column's annotation from its string, about a tenth of what declaring the models costs
# each command at start-up (bench/startup.py).

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from gateway.db.base import Base, UTCDateTime


class NotificationSubscription(Base):
    """An account's opt-in: the one address its notifications go to, and nothing else
    about the person (an address is personal data; opting out deletes the row)."""

    __tablename__ = "notification_subscriptions"

    # CASCADE: removing a forged account (`integrity remove`) takes its opt-in with it.
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"),
                                            primary_key=True)
    email: Mapped[str] = mapped_column(String(254))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    seal: Mapped[str | None] = mapped_column(String(100))


class NotificationVerification(Base):
    """An address waiting for its holder to type the code sent to it. The code is kept
    only as a MAC under the state key over the account, the address and the code, so a
    row written behind the gateway's back verifies no address."""

    __tablename__ = "notification_verifications"

    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"),
                                            primary_key=True)
    email: Mapped[str] = mapped_column(String(254))
    code_hash: Mapped[str] = mapped_column(String(100))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    attempts: Mapped[int] = mapped_column(Integer, default=0)


class NotificationOutbox(Base):
    """One message waiting to be sent, or sent or given up recently (kept for the rate
    limit, then deleted). It names its recipient by account, never by address: the
    address is looked up when it is sent, so an opt-out stops what is already queued."""

    __tablename__ = "notification_outbox"
    # AUTOINCREMENT on SQLite too: a replaced message's id is never reused, so each
    # notification:N in the audit log names one message.
    __table_args__ = (Index("ix_notification_outbox_due", "sent_at", "next_attempt_at"),
                      Index("ix_notification_outbox_recipient", "channel", "account_id"),
                      {"sqlite_autoincrement": True})

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    channel: Mapped[str] = mapped_column(String(16))  # "email" or "webhook"
    account_id: Mapped[int | None] = mapped_column(ForeignKey("accounts.id",
                                                              ondelete="CASCADE"))
    # What it is about ("files:uni-research", "admin"): a newer message on a topic
    # replaces one not yet sent, so a relay that is down does not pile them up.
    topic: Mapped[str] = mapped_column(String(100))
    subject: Mapped[str] = mapped_column(String(200))
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # A sender's lease: set by the one conditional UPDATE that claims the row, so two
    # nodes never send the same message (unless the holder dies mid-send).
    claimed_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    gave_up_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(String(200))
    # A MAC under the state key over channel, recipient, topic, subject and body
    # (gateway.notify.service.outbox_mac): checked before sending.
    seal: Mapped[str | None] = mapped_column(String(100))


class NotificationCursor(Base):
    """How far the planner read the audit log, and when it last planned: advanced by a
    conditional UPDATE, so one node plans each round."""

    __tablename__ = "notification_cursor"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    position: Mapped[int] = mapped_column(BigInteger)
    planned_at: Mapped[datetime] = mapped_column(UTCDateTime)
