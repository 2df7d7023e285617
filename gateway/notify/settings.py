"""Checks of the ``notify_*`` settings, and reading the secrets they name."""

from __future__ import annotations

import ipaddress
import re
import stat
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from gateway.errors import ConfigError

if TYPE_CHECKING:
    from gateway.config import Settings

# An address as a relay accepts it in RCPT TO, and nothing that could end a header line
# or start another: no spaces, quotes, angle brackets, commas or control characters.
_ADDRESS = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+")
MAX_ADDRESS = 254


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine (a relay reached without crossing a network)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_address(value: str, *, key: str) -> str:
    """Return ``value`` if it is a plain e-mail address, else raise naming ``key``."""
    if len(value) > MAX_ADDRESS or not _ADDRESS.fullmatch(value):
        shown = value if value.isprintable() else repr(value)
        raise ConfigError(f"{key}: expected a plain e-mail address such as "
                          f"registry@example.org, got {shown[:80]!r}")
    return value


def check_notification_settings(settings: Settings) -> None:
    """Raise :class:`ConfigError` for a notification setting that cannot work or is unsafe."""
    if settings.notify_smtp_host:
        if not settings.notify_smtp_from:
            raise ConfigError("notify_smtp_from: set the sender address of notifications "
                              "(notify_smtp_host is set)")
        check_address(settings.notify_smtp_from, key="notify_smtp_from")
        if settings.insecure_notify_smtp_without_tls and not is_loopback(
                settings.notify_smtp_host):
            raise ConfigError("insecure_notify_smtp_without_tls: only for a relay on this "
                              f"host (localhost, 127.0.0.1, ::1), not "
                              f"{settings.notify_smtp_host!r}: a relay across a network "
                              "must offer STARTTLS")
        if bool(settings.notify_smtp_user) != bool(settings.notify_smtp_password_file):
            raise ConfigError("notify_smtp_user, notify_smtp_password_file: set both (the "
                              "relay asks for a login) or neither")
    elif settings.notify_smtp_user or settings.notify_smtp_password_file:
        raise ConfigError("notify_smtp_user: set notify_smtp_host, the relay it signs in to")
    if settings.notify_webhook_url:
        parts = urlsplit(settings.notify_webhook_url)
        secure = parts.scheme == "https" or (parts.scheme == "http"
                                             and is_loopback(parts.hostname or ""))
        if not parts.hostname or not secure:
            raise ConfigError("notify_webhook_url: expected an https:// URL (http:// only to "
                              f"this host), got {settings.notify_webhook_url!r}")
        if not settings.notify_webhook_secret_file:
            raise ConfigError("notify_webhook_secret_file: the webhook's requests are signed; "
                              "name the file holding its secret (mode 0600)")


def read_secret_file(path: str, *, key: str) -> bytes:
    """The secret in the file ``path`` names (setting ``key``), refusing a file that
    others may read: a secret readable by every local user is no secret."""
    target = Path(path)
    try:
        mode = target.stat().st_mode
        data = target.read_bytes().strip()
    except OSError as exc:
        raise ConfigError(f"{key}: cannot read {target} ({exc.strerror})") from exc
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(f"{key}: {target} is readable by others (mode "
                          f"{stat.S_IMODE(mode):04o}); chmod 600 {target}")
    if not data:
        raise ConfigError(f"{key}: {target} is empty")
    return data
