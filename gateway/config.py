"""The one settings object, read from ``blindpost.toml`` and ``BLINDPOST_*`` variables.

This is the only module that reads the environment, with :mod:`gateway.client_paths`
(where the clients keep their pins, from ``HOME`` and ``XDG_*``), kept apart so that
``blindpost send`` and ``fetch`` start without building the settings. Precedence,
lowest first: built-in defaults, ``$BLINDPOST_DATA_DIR/blindpost.toml``, environment
variables, explicit overrides passed by the caller (command-line flags).
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from gateway.durations import EXAMPLES as DURATION_EXAMPLES
from gateway.durations import format_duration, parse_duration
from gateway.errors import ConfigError, UsageError

if TYPE_CHECKING:
    from gateway.witness.protocol import WitnessEndpoint

CONFIG_FILE_NAME = "blindpost.toml"
ENV_PREFIX = "BLINDPOST_"
DEFAULT_DATA_DIR = Path("var")


@dataclass(frozen=True)
class Settings:
    """Every tunable of a Blindpost installation, validated on construction."""

    data_dir: Path = DEFAULT_DATA_DIR
    database_url: str = ""
    # How long an SQLite statement waits for a lock held elsewhere (a backup, another
    # writer) before the request is refused as "database unavailable".
    sqlite_busy_timeout_seconds: int = 30
    # Object store: empty for store/ in the data directory, file:///abs/path, or
    # s3://bucket/prefix. Empty S3 settings fall back to boto3's standard chain
    # (AWS_ACCESS_KEY_ID, AWS_REGION, AWS_ENDPOINT_URL_S3, instance roles, ...).
    store_url: str = ""
    s3_endpoint_url: str = ""
    s3_region: str = ""
    s3_access_key_id: str = ""
    s3_secret_access_key: str = field(default="", repr=False)
    s3_sse: str = ""
    s3_sse_kms_key_id: str = ""
    s3_part_size_mib: int = 8
    # Part buffers the S3 uploads of one process share (each s3_part_size_mib): the
    # process's memory for parts, however many sessions upload. More uploads wait.
    s3_part_buffers: int = 8
    # Retention: how long a file waits for its partner, and the ceiling no partner may
    # pass. Durations (90s, 15m, 12h, 7d, 2w; a bare number is days), kept as written
    # in their shortest exact form.
    default_retention: str = "7d"
    max_retention: str = "30d"
    # SFTP listener and its limits.
    sftp_listen: str = "127.0.0.1:2222"
    sftp_workers: int = 0
    sftp_max_connections: int = 200
    sftp_max_connections_per_source: int = 20
    # Connections still signing in: at most this many per source address, and never the
    # last sftp_reserve_percent of sftp_max_connections, unless their address signed in
    # recently, so that slow or idle handshakes cannot starve real users.
    sftp_max_unauthenticated_per_source: int = 10
    sftp_reserve_percent: int = 25
    sftp_auth_timeout_seconds: int = 30
    sftp_idle_timeout_seconds: int = 900
    # SSH channel receive windows: what a client may send before the gateway has taken
    # it, so what an upload waiting for the store (an S3 part buffer) holds in memory.
    # Per session, upload speed is at most the window over the round-trip time. Each
    # worker process shares sftp_receive_budget_mib among its open SFTP sessions, each
    # getting between MIN_CHANNEL_WINDOW_KIB and sftp_channel_window_kib. The maximum
    # stays 1 MiB: 4 MiB was no faster on one machine, and a stop's drain then had up to
    # 4 MiB per session still to take in.
    sftp_channel_window_kib: int = 1024
    sftp_receive_budget_mib: int = 16
    # Out-of-order writes held in memory: per upload, per SSH session, per worker process.
    sftp_reorder_buffer_mib: int = 64
    sftp_session_buffer_mib: int = 64
    sftp_process_buffer_mib: int = 256
    max_upload_mib: int = 51200
    # On SIGTERM or SIGINT: how long running transfers may take to finish before they are
    # aborted. A service manager's stop timeout must exceed it (see sftp_server/service.py).
    shutdown_drain_seconds: int = 10
    # Load balancers (addresses or networks, comma-separated) whose connections must
    # start with a PROXY protocol header naming the real client.
    sftp_proxy_protocol_from: str = ""
    # Console listener. TLS when both files are set; otherwise it belongs behind the
    # reverse proxy in deploy/. The origin is the URL people type (default: from the
    # listener), which passkeys are bound to and state-changing requests must come from.
    console_listen: str = "127.0.0.1:8443"
    console_tls_cert: str = ""
    console_tls_key: str = ""
    console_origin: str = ""
    # Admins must sign in and approve keys with a passkey, not a one-time code.
    console_require_passkey: bool = False
    # Sign-in throttling (gateway/throttle.py): an account is locked after this many
    # failed codes (each within lockout_minutes of the last) for lockout_minutes; a source
    # address is slowed after source_throttle_threshold failures before a verified key,
    # for source_backoff_seconds, doubling with each further one up to the maximum.
    lockout_threshold: int = 5
    lockout_minutes: int = 15
    source_throttle_threshold: int = 50
    source_backoff_seconds: int = 30
    source_backoff_max_minutes: int = 30
    # How long an account created with --enrol-by-ssh may enrol its second factor.
    enrolment_hours: int = 72
    # Audit log.
    audit_origin: str = "blindpost.local/audit"
    audit_checkpoint_every: int = 1000
    audit_checkpoint_seconds: int = 60
    audit_syslog: bool = False
    # Witnesses (c2sp.org/tlog-witness) that cosign each checkpoint, so that even someone
    # holding keys/ cannot rewrite the history they saw: "URL VKEY" entries separated by
    # commas (or a TOML array of them), the VKEY being what `blindpost witness keygen`
    # printed for the witness. A checkpoint with fewer cosignatures than the quorum is an
    # alarm. Each request waits at most the timeout; no transfer ever waits for one.
    audit_witnesses: str = ""
    audit_witness_quorum: int = 1
    audit_witness_timeout_seconds: int = 5
    # True only when one process alone writes this store: crash leftovers are then swept
    # at start instead of after an hour's grace.
    single_node: bool = False
    # Refuse uploads to a partner that has no data-sharing agreement (gateway.agreements);
    # off, they are allowed and their data elements recorded. See docs/agreements.md.
    require_agreement: bool = False
    # Dangerous switches are named insecure_* and are logged and audited on every use.
    insecure_single_admin_key_approval: bool = False
    log_level: str = "info"
    log_format: str = "text"
    # Prometheus endpoint (HOST:PORT); empty keeps it off.
    metrics_listen: str = ""
    # Notifications (gateway/notify): e-mail through an SMTP relay, and a signed webhook,
    # telling a partner's people that files wait and admins that something awaits their
    # approval or an alarm was raised; never a file name, size or content. Both are off
    # while their host or URL is empty. The relay must offer STARTTLS (verified against
    # the system's CAs, or those in notify_smtp_ca_file, which an https webhook is checked
    # against too); only a relay on this host may be used without it, and only by the
    # insecure switch below. Secrets live in 0600 files.
    notify_smtp_host: str = ""
    notify_smtp_port: int = 587
    notify_smtp_user: str = ""
    notify_smtp_password_file: str = ""
    notify_smtp_from: str = ""
    notify_smtp_ca_file: str = ""
    notify_webhook_url: str = ""
    notify_webhook_secret_file: str = ""
    # One message per partner (and one digest per admin) per interval, at most
    # notify_max_per_hour to any one recipient; a failed send is retried with doubling
    # waits, at most notify_max_attempts times. Each relay or webhook call waits at most
    # notify_timeout_seconds, in the background: no transfer waits for one.
    notify_interval_seconds: int = 300
    notify_max_per_hour: int = 6
    notify_max_attempts: int = 8
    notify_timeout_seconds: int = 10
    insecure_notify_smtp_without_tls: bool = False

    def __post_init__(self) -> None:
        for name in DURATION_SETTINGS:
            # Frozen: the normalised text replaces what was written (7 -> "7d").
            object.__setattr__(self, name, format_duration(_duration(self, name)))
        _check_positive(self, "sqlite_busy_timeout_seconds", "sftp_max_connections",
                        "sftp_max_connections_per_source", "sftp_max_unauthenticated_per_source",
                        "sftp_auth_timeout_seconds", "sftp_idle_timeout_seconds",
                        "sftp_reorder_buffer_mib", "sftp_session_buffer_mib",
                        "sftp_process_buffer_mib", "max_upload_mib", "lockout_threshold",
                        "lockout_minutes", "source_throttle_threshold", "source_backoff_seconds",
                        "source_backoff_max_minutes", "enrolment_hours",
                        "audit_checkpoint_every", "audit_checkpoint_seconds",
                        "audit_witness_quorum", "audit_witness_timeout_seconds",
                        "notify_smtp_port", "notify_interval_seconds", "notify_max_per_hour",
                        "notify_max_attempts", "notify_timeout_seconds")
        if self.shutdown_drain_seconds < 0:
            raise ConfigError("shutdown_drain_seconds: must be 0 (abort transfers at once) "
                              "or a positive number of seconds")
        _check_at_least(self, "sftp_channel_window_kib", MIN_CHANNEL_WINDOW_KIB,
                        why="one 255 KiB SFTP write must fit")
        _check_at_least(self, "sftp_receive_budget_mib", 1,
                        why="the SFTP sessions of a worker process share it")
        if self.sftp_workers < 0:
            raise ConfigError("sftp_workers: must be 0 (one per core) or a positive count")
        if self.sftp_reserve_percent < 0:
            raise ConfigError("sftp_reserve_percent: must be between 0 and "
                              f"{MAX_RESERVE_PERCENT}")
        _check_at_most(self)
        if self.default_retention_seconds > self.max_retention_seconds:
            raise ConfigError("default_retention: must not exceed max_retention "
                              f"({self.max_retention})")
        if self.log_level not in LOG_LEVELS:
            raise ConfigError(f"log_level: expected one of {', '.join(LOG_LEVELS)}, "
                              f"got {self.log_level!r}")
        for name in ("sftp_listen", "console_listen"):
            parse_listen(getattr(self, name), key=name)
        if self.metrics_listen:
            parse_listen(self.metrics_listen, key="metrics_listen")
        if bool(self.console_tls_cert) != bool(self.console_tls_key):
            raise ConfigError("console_tls_cert, console_tls_key: set both (TLS) or neither "
                              "(behind the reverse proxy)")
        if self.console_origin and not _ORIGIN.fullmatch(self.console_origin):
            raise ConfigError("console_origin: expected a URL without a path, such as "
                              f"https://blindpost.example.org, got {self.console_origin!r}")
        if not self.audit_origin or "\n" in self.audit_origin:
            raise ConfigError("audit_origin: must be a non-empty single line")
        self._check_witnesses()
        if self.log_format not in LOG_FORMATS:
            raise ConfigError(f"log_format: expected one of {', '.join(LOG_FORMATS)}, "
                              f"got {self.log_format!r}")
        self._check_store()
        self._check_notifications()
        parse_networks(self.sftp_proxy_protocol_from, key="sftp_proxy_protocol_from")

    def _check_witnesses(self) -> None:
        count = len(self.witnesses)
        if count and self.audit_witness_quorum > count:
            raise ConfigError(f"audit_witness_quorum: {self.audit_witness_quorum} is more "
                              f"than the {count} witness(es) in audit_witnesses")

    def _check_notifications(self) -> None:
        # Imported here: the client commands read settings without the notifier.
        from gateway.notify.settings import check_notification_settings

        check_notification_settings(self)

    @property
    def witnesses(self) -> tuple[WitnessEndpoint, ...]:
        """The parsed ``audit_witnesses``."""
        if not self.audit_witnesses.replace(",", "").strip():
            # What parse_witness_list makes of it, without loading the checkpoint formats
            # for every command on a host that names no witness.
            return ()
        # Imported here: the client commands read settings without needing these formats.
        from gateway.witness.protocol import parse_witness_list

        try:
            return parse_witness_list(self.audit_witnesses)
        except UsageError as exc:
            raise ConfigError(f"audit_witnesses: {exc.diagnostics()}") from exc

    def _check_store(self) -> None:
        location = self.store_location
        if location.scheme == "s3" and not MIN_PART_MIB <= self.s3_part_size_mib <= MAX_PART_MIB:
            raise ConfigError(f"s3_part_size_mib: must be between {MIN_PART_MIB} and "
                              f"{MAX_PART_MIB} (S3's part size limits), got "
                              f"{self.s3_part_size_mib}")
        if location.scheme == "s3" and not 1 <= self.s3_part_buffers <= MAX_PART_BUFFERS:
            raise ConfigError(f"s3_part_buffers: must be between 1 and {MAX_PART_BUFFERS}, "
                              f"got {self.s3_part_buffers}")
        # An upload's ciphertext is 16 bytes per 64 KiB chunk longer, plus its header.
        largest = self.max_upload_mib + self.max_upload_mib * 16 // 65536 + 1
        if location.scheme == "s3" and self.s3_part_size_mib * MAX_PARTS < largest:
            raise ConfigError(f"s3_part_size_mib: {MAX_PARTS} parts of "
                              f"{self.s3_part_size_mib} MiB cannot hold an upload of "
                              f"max_upload_mib ({self.max_upload_mib} MiB)")
        if self.s3_sse not in S3_SSE_MODES:
            raise ConfigError(f"s3_sse: expected one of {', '.join(map(repr, S3_SSE_MODES))}, "
                              f"got {self.s3_sse!r}")
        if self.s3_sse_kms_key_id and self.s3_sse != "aws:kms":
            raise ConfigError('s3_sse_kms_key_id: only used with s3_sse = "aws:kms"')

    @property
    def default_retention_seconds(self) -> int:
        """How long a file waits when its partner sets no retention of its own."""
        return parse_duration(self.default_retention)

    @property
    def max_retention_seconds(self) -> int:
        """The longest any file waits, whatever its partner's retention says."""
        return parse_duration(self.max_retention)

    @property
    def insecure_switches(self) -> list[str]:
        """The names of the ``insecure_*`` settings that are turned on."""
        return [f.name for f in fields(self) if f.name.startswith("insecure_")
                and getattr(self, f.name)]

    def audited_values(self) -> dict[str, str]:
        """Every setting as text for the audit log's ``setting:change`` events.

        The data directory is where the log lives, not a setting of it; a password in the
        database URL is replaced by ``***``, and so is a secret setting.
        """
        values = {}
        for item in fields(self):
            if item.name == "data_dir":
                continue
            value = getattr(self, item.name)
            if not item.repr:
                # A secret (declared with repr=False): only whether it is set. Not even a
                # hash, which would let a reader of the log test guesses of a weak one.
                values[item.name] = "***" if value else ""
                continue
            text = str(value).lower() if isinstance(value, bool) else str(value)
            values[item.name] = _URL_PASSWORD.sub(r"://\1:***@", text)
        return values

    @property
    def console_tls(self) -> bool:
        """Whether the console serves TLS itself."""
        return bool(self.console_tls_cert and self.console_tls_key)

    @property
    def effective_console_origin(self) -> str:
        """The console's origin: the setting, else its listener (loopback as localhost,
        which browsers treat as secure and accept as a passkey's relying party)."""
        if self.console_origin:
            return self.console_origin.rstrip("/")
        host, port = parse_listen(self.console_listen)
        if host in ("127.0.0.1", "::1", "0.0.0.0", "::"):  # noqa: S104  # Names, not binds.
            host = "localhost"
        return f"{'https' if self.console_tls else 'http'}://{host}:{port}"

    @property
    def effective_database_url(self) -> str:
        """The database URL, defaulting to SQLite inside the data directory."""
        return self.database_url or f"sqlite:///{(self.data_dir / 'blindpost.db').resolve()}"

    @property
    def keys_dir(self) -> Path:
        return self.data_dir / "keys"

    @property
    def store_dir(self) -> Path:
        return self.data_dir / "store"

    @property
    def store_location(self) -> StoreLocation:
        """Where ciphertext objects live, parsed from ``store_url``."""
        return parse_store_url(self.store_url, default_dir=self.store_dir)

    @property
    def host_key_path(self) -> Path:
        return self.keys_dir / "ssh_host_ed25519_key"

    @property
    def audit_key_path(self) -> Path:
        return self.keys_dir / "audit_ed25519"

    @property
    def audit_jsonl_path(self) -> Path:
        return self.data_dir / "audit.jsonl"

    @property
    def audit_checkpoint_path(self) -> Path:
        return self.data_dir / "audit-checkpoint.txt"

    @property
    def state_snapshot_path(self) -> Path:
        """The current state this node followed from the log (gateway/ledger.py)."""
        return self.data_dir / "state-snapshot.json"

    @property
    def audit_verified_path(self) -> Path:
        """Where ``audit verify`` keeps its last result, to continue from it."""
        return self.data_dir / "audit-verified.json"


LOG_LEVELS = ("debug", "info", "warning", "error")
_ORIGIN = re.compile(r"https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?/?")
DURATION_SETTINGS = ("default_retention", "max_retention")
# Names of releases that counted retention in days; they still work and mean days.
LEGACY_NAMES = {"default_retention_days": "default_retention",
                "max_retention_days": "max_retention"}
_URL_PASSWORD = re.compile(r"://([^:/@]*):[^@/]*@")
LOG_FORMATS = ("text", "json")
S3_SSE_MODES = ("", "AES256", "aws:kms")
# S3 parts are at least 5 MiB (except the last) and at most 5 GiB.
MIN_PART_MIB = 5
MAX_PART_MIB = 5 * 1024
MAX_PART_BUFFERS = 1024
MAX_PARTS = 10_000  # per multipart upload


@dataclass(frozen=True)
class StoreLocation:
    """A parsed ``store_url``: a local directory, or a bucket and key prefix."""

    scheme: str  # "file" or "s3"
    path: Path | None = None
    bucket: str = ""
    prefix: str = ""


def parse_store_url(value: str, *, default_dir: Path) -> StoreLocation:
    """Parse ``file:///abs/path`` or ``s3://bucket/prefix``; empty means ``default_dir``."""
    if not value:
        return StoreLocation("file", path=default_dir)
    parts = urlsplit(value)
    if parts.scheme == "file" and not parts.netloc and parts.path.startswith("/"):
        return StoreLocation("file", path=Path(parts.path))
    if parts.scheme == "s3" and parts.netloc and not (parts.query or parts.fragment):
        prefix = parts.path.strip("/")
        return StoreLocation("s3", bucket=parts.netloc, prefix=f"{prefix}/" if prefix else "")
    raise ConfigError(f"store_url: expected file:///ABSOLUTE/PATH or s3://BUCKET/PREFIX, "
                      f"got {value!r}")


def parse_networks(value: str, *, key: str) -> tuple[ipaddress.IPv4Network
                                                     | ipaddress.IPv6Network, ...]:
    """Parse a comma-separated list of addresses or networks (``10.0.0.5, 10.1.0.0/24``)."""
    try:
        return tuple(ipaddress.ip_network(item.strip()) for item in value.split(",")
                     if item.strip())
    except ValueError as exc:
        raise ConfigError(f"{key}: expected addresses or networks separated by commas, "
                          f"got {value!r} ({exc})") from exc
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


# Ceilings past which a value is a slip of the keyboard rather than a choice: a retention
# that runs past the calendar, a count no database column holds, more processes than any
# host runs.
MAX_INTEGER_SETTING = 2**31 - 1
MAX_RETENTION = format_duration(3650 * 86400)
MAX_WORKERS = 256
MAX_RESERVE_PERCENT = 90
# The smallest SSH channel window: one 255 KiB SFTP write and its header must fit.
MIN_CHANNEL_WINDOW_KIB = 256
_CEILINGS = {"sftp_workers": MAX_WORKERS, "sftp_reserve_percent": MAX_RESERVE_PERCENT,
             "notify_smtp_port": 65535}


def _check_at_most(settings: Settings) -> None:
    for item in fields(settings):
        value = getattr(settings, item.name)
        if isinstance(value, bool) or not isinstance(value, int):
            continue
        ceiling = _CEILINGS.get(item.name, MAX_INTEGER_SETTING)
        if value > ceiling:
            raise ConfigError(f"{item.name}: must be at most {ceiling}, got {value}")


def _duration(settings: Settings, name: str) -> int:
    try:
        seconds = parse_duration(getattr(settings, name), what="duration")
    except ValueError as exc:
        raise ConfigError(f"{name}: {exc}") from None
    if seconds > parse_duration(MAX_RETENTION):
        raise ConfigError(f"{name}: must be at most {MAX_RETENTION}, got "
                          f"{getattr(settings, name)}")
    return seconds


def _check_at_least(settings: Settings, name: str, least: int, *, why: str) -> None:
    if getattr(settings, name) < least:
        raise ConfigError(f"{name}: must be at least {least} ({why})")


def _check_positive(settings: Settings, *names: str) -> None:
    for name in names:
        if getattr(settings, name) <= 0:
            raise ConfigError(f"{name}: must be a positive integer, got {getattr(settings, name)}")


def parse_listen(value: str, *, key: str = "listen") -> tuple[str, int]:
    """Split ``HOST:PORT`` (IPv6 as ``[::1]:PORT``) and validate the port."""
    host, sep, port_text = value.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ConfigError(f"{key}: expected HOST:PORT (e.g. 127.0.0.1:2222), got {value!r}")
    return host, int(port_text)


# The listener each listen setting opens: a message about an address names both.
LISTENERS = {"sftp_listen": "the SFTP server", "console_listen": "the console",
             "metrics_listen": "the metrics endpoint"}


def address_in_use(key: str, listen: str, *, flag: str | None = "--listen") -> str:
    """What to say when ``listen``, the value of setting ``key``, is taken: which listener
    could not start, and every way to move it."""
    shown = listen if listen.isprintable() else repr(listen)
    ways = [f"{key} in {CONFIG_FILE_NAME}", f"{ENV_PREFIX}{key.upper()}"]
    if flag:
        ways.append(flag)
    return (f"cannot listen on {shown} for {LISTENERS[key]}: the address is already in use "
            f"(is another server running there?); set another with {', '.join(ways[:-1])} "
            f"or {ways[-1]}")


def _setting_names() -> tuple[str, ...]:
    """Every setting, in declaration order (the example file follows it)."""
    return tuple(f.name for f in fields(Settings))


def _coerce(name: str, raw: object, *, source: str) -> object:
    """Convert a TOML or environment value to the field's type, or raise naming the key."""
    default = getattr(Settings(), name)
    if name in DURATION_SETTINGS:
        if isinstance(raw, str) or (isinstance(raw, int) and not isinstance(raw, bool)):
            return str(raw)
        raise ConfigError(f"{name} ({source}): expected a duration such as "
                          f"{DURATION_EXAMPLES}, got {raw!r}")
    if isinstance(default, bool):
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and raw.lower() in _TRUE + _FALSE:
            return raw.lower() in _TRUE
        raise ConfigError(f"{name} ({source}): expected true or false, got {raw!r}")
    if isinstance(default, int):
        if isinstance(raw, int) and not isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and raw.strip().lstrip("-").isdigit():
            return int(raw)
        raise ConfigError(f"{name} ({source}): expected an integer, got {raw!r}")
    if isinstance(default, Path):
        if isinstance(raw, str) and raw:
            return Path(raw)
        raise ConfigError(f"{name} ({source}): expected a path, got {raw!r}")
    if isinstance(raw, str):
        return raw
    if name == "audit_witnesses" and isinstance(raw, list) and all(
            isinstance(item, str) for item in raw):
        return ", ".join(raw)
    raise ConfigError(f"{name} ({source}): expected a string, got {raw!r}")


def _read_file(path: Path) -> dict[str, object]:
    try:
        with path.open("rb") as handle:
            document = tomllib.load(handle)
    except FileNotFoundError:
        return {}
    except PermissionError as exc:
        raise ConfigError(f"{path}: cannot read configuration file ({exc.strerror})") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from exc
    known = _setting_names()
    values: dict[str, object] = {}
    for key, raw in document.items():
        if key in LEGACY_NAMES:
            _set_legacy(values, key, raw, source=str(path))
            continue
        if key not in known or key == "data_dir":
            raise ConfigError(f"{path}: unknown setting {key!r}; "
                              f"accepted: {', '.join(sorted(set(known) - {'data_dir'}))}")
        _set_once(values, key, _coerce(key, raw, source=str(path)), source=str(path))
    return values


def _set_once(values: dict[str, object], name: str, value: object, *, source: str) -> None:
    """Set ``name`` unless an old name already set it in the same place (ambiguous)."""
    if name in values:
        old = [key for key, new in LEGACY_NAMES.items() if new == name]
        twice = f"both {old[0]!r} and {name!r} are" if old else f"{name!r} is"
        raise ConfigError(f"{source}: {twice} set; keep only {name!r}")
    values[name] = value


def _set_legacy(values: dict[str, object], key: str, raw: object, *, source: str) -> None:
    """A ``*_days`` setting of earlier releases: a whole number of days, as before."""
    days = raw.strip() if isinstance(raw, str) else raw
    if isinstance(days, bool) or not (isinstance(days, int) or (
            isinstance(days, str) and days.isdigit())):
        raise ConfigError(f"{key} ({source}): expected a whole number of days, got {raw!r} "
                          f"(or use {LEGACY_NAMES[key]!r}: {DURATION_EXAMPLES})")
    _set_once(values, LEGACY_NAMES[key], f"{days}d", source=source)


def _read_environment(environ: Mapping[str, str]) -> dict[str, object]:
    known = _setting_names()
    values: dict[str, object] = {}
    for env_key, raw in environ.items():
        if not env_key.startswith(ENV_PREFIX):
            continue
        name = env_key[len(ENV_PREFIX):].lower()
        if name in LEGACY_NAMES:
            _set_legacy(values, name, raw, source=env_key)
            continue
        if name not in known:
            raise ConfigError(f"{env_key}: unknown setting; accepted: "
                              + ", ".join(ENV_PREFIX + k.upper() for k in sorted(known)))
        _set_once(values, name, _coerce(name, raw, source=env_key), source=env_key)
    return values


def load_settings(*, data_dir: Path | None = None,
                  environ: Mapping[str, str] | None = None,
                  overrides: Mapping[str, object] | None = None) -> Settings:
    """Build the settings from defaults, the data directory's file, the environment and overrides.

    ``data_dir`` (from ``--data-dir``) wins over ``BLINDPOST_DATA_DIR``.
    """
    env_values = _read_environment(os.environ if environ is None else environ)
    chosen_dir = data_dir or env_values.pop("data_dir", None) or DEFAULT_DATA_DIR
    env_values.pop("data_dir", None)
    assert isinstance(chosen_dir, Path)
    # Absolute, so that every message naming a file in it says where it really is.
    chosen_dir = chosen_dir.absolute()
    values: dict[str, object] = {"data_dir": chosen_dir}
    values.update(_read_file(chosen_dir / CONFIG_FILE_NAME))
    values.update(env_values)
    values.update(overrides or {})
    return Settings(**values)  # type: ignore[arg-type]  # Keys and types were checked above.


def data_dir_origin(*, data_dir: Path | None, environ: Mapping[str, str] | None = None) -> str:
    """Which setting chose the data directory (``--data-dir`` given as ``data_dir``), for
    messages that name it."""
    if data_dir is not None:
        return "--data-dir"
    if (os.environ if environ is None else environ).get(f"{ENV_PREFIX}DATA_DIR"):
        return f"{ENV_PREFIX}DATA_DIR"
    return f"the default ({DEFAULT_DATA_DIR} in the current directory)"


def render_example() -> str:
    """Return a commented ``blindpost.toml`` with every setting at its default."""
    lines = ["# Blindpost configuration. Environment variables BLINDPOST_<NAME> override these."]
    defaults = Settings()
    for name in _setting_names():
        if name == "data_dir":
            continue
        value = getattr(defaults, name)
        rendered = ("true" if value else "false") if isinstance(value, bool) else (
            str(value) if isinstance(value, int) else f'"{value}"')
        lines.append(f"# {name} = {rendered}")
    return "\n".join(lines) + "\n"
