"""Handing one message to the SMTP relay or the webhook: the only network calls here.

Every failure — the relay unreachable, refusing STARTTLS, a certificate that does not
verify, a refused login or recipient, a webhook answering other than 2xx — becomes one
:class:`DeliveryError` with a short reason fit for a log line (no address, no secret).
"""

from __future__ import annotations

import hashlib
import hmac
import smtplib
import socket
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from typing import TYPE_CHECKING

from gateway.errors import GatewayError
from gateway.notify.settings import read_secret_file

if TYPE_CHECKING:
    from datetime import datetime

    from gateway.config import Settings

SIGNATURE_HEADER = "Blindpost-Signature"
TIMESTAMP_HEADER = "Blindpost-Timestamp"
SIGNATURE_VERSION = "v1"
# How far a receiver should accept a webhook's timestamp from its own clock.
DEFAULT_TOLERANCE_SECONDS = 300


class DeliveryError(GatewayError):
    """A message could not be handed over; it stays in the outbox for a later attempt."""


@dataclass(frozen=True)
class Mail:
    """One e-mail: to one person, plain text."""

    to: str
    subject: str
    body: str


def build_message(settings: Settings, mail: Mail, *, now: datetime) -> EmailMessage:
    """The e-mail as the relay receives it."""
    message = EmailMessage()
    message["From"] = settings.notify_smtp_from
    message["To"] = mail.to
    message["Subject"] = mail.subject
    message["Date"] = format_datetime(now)
    message["Message-ID"] = make_msgid(domain=settings.notify_smtp_from.rpartition("@")[2])
    # RFC 3834: tells auto-responders not to answer a machine.
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(mail.body)
    return message


def send_mail(settings: Settings, mail: Mail, *, now: datetime) -> bool:
    """Send ``mail`` through the relay, over STARTTLS unless the insecure switch allows a
    local relay without it; return whether it went over TLS, or raise
    :class:`DeliveryError`."""
    message = build_message(settings, mail, now=now)
    try:
        with smtplib.SMTP(settings.notify_smtp_host, settings.notify_smtp_port,
                          timeout=settings.notify_timeout_seconds) as relay:
            relay.ehlo()
            encrypted = relay.has_extn("starttls")
            if encrypted:
                relay.starttls(context=_tls_context(settings))
                relay.ehlo()
            elif not settings.insecure_notify_smtp_without_tls:
                # Sending in the clear would hand the addresses and the login to anyone
                # on the path: refuse rather than fall back.
                raise DeliveryError("the relay does not offer STARTTLS")
            if settings.notify_smtp_user:
                password = read_secret_file(settings.notify_smtp_password_file,
                                            key="notify_smtp_password_file")
                relay.login(settings.notify_smtp_user, password.decode())
            relay.send_message(message)
            return encrypted
    except DeliveryError:
        raise
    except ssl.SSLError as exc:
        raise DeliveryError(f"TLS with the relay failed: {exc.reason or exc}") from exc
    except smtplib.SMTPException as exc:
        raise DeliveryError(f"the relay refused: {_smtp_reason(exc)}") from exc
    except (OSError, UnicodeError) as exc:
        raise DeliveryError(f"cannot reach the relay {settings.notify_smtp_host}:"
                            f"{settings.notify_smtp_port} ({_os_reason(exc)})") from exc


def _tls_context(settings: Settings) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=settings.notify_smtp_ca_file or None)


def _smtp_reason(exc: smtplib.SMTPException) -> str:
    code = getattr(exc, "smtp_code", None)
    return f"{type(exc).__name__} {code}" if code else type(exc).__name__


def _os_reason(exc: Exception) -> str:
    if isinstance(exc, socket.timeout | TimeoutError):
        return "timed out"
    return getattr(exc, "strerror", None) or type(exc).__name__


def sign_webhook(secret: bytes, *, timestamp: int, body: bytes) -> str:
    """The signature header's value: HMAC-SHA256 over ``"{timestamp}." + body``.

    The timestamp is inside what is signed, so a captured request cannot be replayed
    later with a fresh time; receivers refuse a time far from their clock.
    """
    mac = hmac.new(secret, str(timestamp).encode() + b"." + body, hashlib.sha256)
    return f"{SIGNATURE_VERSION}={mac.hexdigest()}"


def verify_webhook(secret: bytes, *, timestamp: str, body: bytes, signature: str,
                   now: float, tolerance: int = DEFAULT_TOLERANCE_SECONDS) -> None:
    """What a receiver does: raise :class:`DeliveryError` unless ``signature`` is this
    body's, made at a time within ``tolerance`` seconds of ``now``."""
    if not timestamp.isdigit() or abs(now - int(timestamp)) > tolerance:
        raise DeliveryError("webhook timestamp missing or too far from now")
    expected = sign_webhook(secret, timestamp=int(timestamp), body=body)
    if not hmac.compare_digest(expected.encode(), signature.encode()):
        raise DeliveryError("webhook signature does not match")


def post_webhook(settings: Settings, body: bytes, *, now: datetime) -> None:
    """POST ``body`` (JSON) to the webhook, signed; raise :class:`DeliveryError`."""
    secret = read_secret_file(settings.notify_webhook_secret_file,
                              key="notify_webhook_secret_file")
    timestamp = int(now.timestamp())
    request = urllib.request.Request(  # noqa: S310  # The URL's scheme is checked in settings.
        settings.notify_webhook_url, data=body, method="POST",
        headers={"Content-Type": "application/json", "User-Agent": "blindpost-notify",
                 TIMESTAMP_HEADER: str(timestamp),
                 SIGNATURE_HEADER: sign_webhook(secret, timestamp=timestamp, body=body)})
    try:
        with urllib.request.urlopen(request, timeout=settings.notify_timeout_seconds,  # noqa: S310
                                    context=_tls_context(settings)) as response:
            response.read(1024)
    except urllib.error.HTTPError as exc:
        raise DeliveryError(f"the webhook answered HTTP {exc.code}") from exc
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        shown = _os_reason(reason) if isinstance(reason, Exception) else str(reason)
        raise DeliveryError(f"cannot reach the webhook ({shown})") from exc
