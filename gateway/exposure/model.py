"""The values of a breach-exposure report, and the window it covers.

Everything here is read from the verified audit log (see :mod:`gateway.exposure.scan`),
except the store check, which looks at the objects stored now. A field the log does not
record for a file is ``None`` and named in the file's ``unrecorded``: the report says so
rather than guess it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from gateway.errors import UsageError

# Removal reasons, in the words of the report.
EXPIRED = "expired"
DOWNLOAD_LIMIT = "download limit"
WITHDRAWN = "withdrawn"
SUPERSEDED = "superseded"
REVOKED_PARTNER = "revoked: partner disabled"
PURGED_BY_ADMIN = "purged by an administrator"
# Who encrypted a file.
BY_GATEWAY = "gateway"
BY_UPLOADER = "uploader"
PLAINTEXT_NONE = "none"


def parse_moment(text: str, *, option: str, end_of_day: bool = False) -> datetime:
    """An ISO 8601 time with an offset, or a date (a whole UTC day).

    A date means its first instant, or with ``end_of_day`` its last (so ``--to`` with a
    date includes that whole day). A time without an offset is refused: a report that
    may be quoted to the people affected must not guess a time zone.
    """
    value = text.strip()
    try:
        if len(value) == 10:
            day = date.fromisoformat(value)
            moment = datetime.combine(day, time.min, tzinfo=UTC)
            return moment + timedelta(days=1, microseconds=-1) if end_of_day else moment
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise UsageError(f"{option}: expected an ISO 8601 time with an offset (such as "
                         f"2026-11-02T09:00:00+01:00 or ...Z) or a date (2026-11-02), "
                         f"got {text!r}") from None
    if parsed.tzinfo is None:
        raise UsageError(f"{option}: {text!r} has no offset; add one, such as Z (UTC) or "
                         "+01:00")
    return parsed.astimezone(UTC)


@dataclass(frozen=True)
class Window:
    """The moments the report is about, both ends included."""

    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise UsageError("the report window needs times with an offset")
        if self.end < self.start:
            raise UsageError(f"the window ends ({self.end.isoformat()}) before it starts "
                             f"({self.start.isoformat()})")

    def holds(self, moment: datetime) -> bool:
        return self.start <= moment <= self.end

    def overlaps(self, begins: datetime | None, ends: datetime | None) -> bool:
        """Whether something present from ``begins`` until ``ends`` (excluded) was present
        at a moment of the window; ``None`` is an open end."""
        return (begins is None or begins <= self.end) and (ends is None or ends > self.start)


@dataclass(frozen=True, slots=True)
class RecipientExposure:
    """A key a file was encrypted to; ``None`` where the log does not say."""

    key_id: int | None
    kind: str | None
    fingerprint: str | None
    post_quantum: bool | None


@dataclass(frozen=True, slots=True)
class DownloadExposure:
    """One read of a file by a partner account, complete or not."""

    account: str
    at: datetime
    complete: bool
    bytes: int | None


@dataclass(frozen=True, slots=True)
class FileExposure:
    """A file that was on the server at some moment of the window, and its whole history.

    ``removed_at`` is ``None`` while the file was still stored when the log ends;
    ``recipients`` is ``None`` when the server does not know them (the uploader
    encrypted the file and its client declared no keys, or the log does not record
    them). For a file the uploader encrypted (``encrypted_by`` is ``uploader``) they are
    the keys its client declared, checked against the partner's approved keys at upload
    but not against the file, which age does not allow.
    """

    id: str
    partner: str
    name: str
    size: int | None
    sha256: str | None
    uploader: str | None
    uploaded_at: datetime | None
    encrypted_by: str | None
    recipients: tuple[RecipientExposure, ...] | None
    expires_at: datetime | None
    removed_at: datetime | None
    removal: str | None
    removed_by: str | None
    downloads: tuple[DownloadExposure, ...]
    unrecorded: tuple[str, ...]
    # What the file holds (issue 24), never a value: its format ("csv", "opaque"…), data
    # elements and record count, and who read them ("gateway", or "sender" as declared
    # by `blindpost send`). ``data_format`` None: not recorded (uploaded before).
    data_format: str | None = None
    data_elements: tuple[str, ...] | None = None
    records: int | None = None
    data_read_by: str | None = None


@dataclass(frozen=True, slots=True)
class AccountExposure:
    """An account that could sign in at some moment of the window.

    ``disabled_at`` is when it stopped being able to (its own or its partner's
    disabling), if it did; ``sign_ins`` counts its successful sign-ins in the window.
    """

    username: str
    role: str | None
    partner: str | None
    created_at: datetime | None
    disabled_at: datetime | None
    sign_ins: int


@dataclass(frozen=True, slots=True)
class KeyExposure:
    """A recipient key approved in the window."""

    id: int
    partner: str
    kind: str | None
    fingerprint: str | None
    post_quantum: bool | None
    proposed_by: str | None
    approved_by: str
    approved_at: datetime
    revoked_at: datetime | None


@dataclass(frozen=True, slots=True)
class PartnerSummary:
    """The counts of one partner's files in the window."""

    partner: str
    files: int
    bytes: int
    downloads: int
    incomplete_downloads: int
    removed: int
    waiting: int
    # Records (an upper bound: see gateway.data_elements) and the data elements of the
    # files whose structure was read; files of unknown structure; files from before
    # data elements were recorded.
    records: int = 0
    data_elements: tuple[str, ...] = ()
    unknown_structure: int = 0
    not_recorded: int = 0


@dataclass(frozen=True, slots=True)
class StoreProblem:
    """A stored object that is not age ciphertext (or cannot be read to tell)."""

    object_id: str
    file_id: str | None
    partner: str | None
    name: str | None
    problem: str


@dataclass(frozen=True)
class StoreCheck:
    """The check, made as the report is built, that every stored object is age ciphertext."""

    objects: int
    problems: tuple[StoreProblem, ...]


@dataclass(frozen=True)
class LogVerification:
    """What the audit log was verified against, or why it failed.

    ``checkpoint`` names the largest signed checkpoint the recomputed tree matched;
    entries after it (``beyond_checkpoint``) were checked by their MACs (the state key)
    and the stored tree, not yet by a signature.
    A log that failed has ``problems`` (the findings) and no counts.
    """

    verified: bool
    entries: int | None
    checkpoint: str | None
    checkpoint_size: int | None
    checkpoint_root: str | None
    outside_checkpoints: int
    beyond_checkpoint: int | None
    problems: tuple[str, ...]


@dataclass(frozen=True)
class ExposureReport:
    """What was on the server in a window, encrypted to whom, and who fetched it."""

    window_start: datetime
    window_end: datetime
    partner: str | None
    generated_at: datetime
    generated_by: str
    verification: LogVerification
    plaintext_at_rest: str
    summary: tuple[PartnerSummary, ...]
    files: tuple[FileExposure, ...]
    accounts: tuple[AccountExposure, ...]
    keys: tuple[KeyExposure, ...]
    store: StoreCheck

    @property
    def warning(self) -> str | None:
        """The warning every page and document carries when the log did not verify."""
        if self.verification.verified:
            return None
        return ("WARNING: UNVERIFIED. The audit log failed verification; this report may "
                "rest on altered or missing entries.")
