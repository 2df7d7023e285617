"""The notification tables: who asked for e-mail, the outbox, and the planner's cursor.

None of them grants anything, so none is sealed: a row written by someone who can write
the database can at most send a message of counts and names to an address of theirs,
which is what reading the database already tells them.
"""

from __future__ import annotations

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


class NotificationCursor(Base):
    """How far the planner read the audit log, and when it last planned: advanced by a
    conditional UPDATE, so one node plans each round."""

    __tablename__ = "notification_cursor"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    position: Mapped[int] = mapped_column(BigInteger)
    planned_at: Mapped[datetime] = mapped_column(UTCDateTime)
