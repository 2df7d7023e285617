"""The virtual filesystem: the one function that maps an SFTP path to a gateway object.

No filesystem path is ever built from client input. A path is split into names and
resolved lexically inside a namespace that only exists here; ``..`` cannot climb above
``/`` (as in a chroot), and nothing is percent-decoded, so ``%2e%2e`` is just a name.

What each role sees::

    partner   /            its own inbox: NAME.age files, read-only (remove withdraws)
              /NAME.age    one of its files
              /.portal-enrolment
                           a new one-time code for its first portal passkey, issued
                           by each read (not listed; see gateway.portal_enrolment)
    staff     /            one folder per active partner
              /SLUG/       what waits for that partner; staff write here, never read
              /SLUG/NAME   a file in it (upload target, or an existing NAME.age)
              /.recipients/SLUG
                           the partner's published recipient list, read-only (not
                           listed in /; see gateway.sftp_extensions)
              /.portal-enrolment
                           as for partners: the code for a first console passkey
              /.agreements/SLUG
                           the partner's data-sharing agreement, read-only (absent
                           without one; not listed)

Admins and auditors see nothing: every path is permission denied.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.db.models import Role
from gateway.errors import NotFoundError, PolicyError, UsageError
from gateway.partners import check_slug
from gateway.sftp_extensions import AGREEMENTS_FOLDER, PORTAL_ENROLMENT_FILE, RECIPIENTS_FOLDER
from gateway.transfers import check_file_name

MAX_PATH_BYTES = 4096


@dataclass(frozen=True)
class Root:
    """``/``: a partner's inbox, or staff's list of partner folders."""


@dataclass(frozen=True)
class PartnerFolder:
    """``/SLUG`` as staff see it."""

    slug: str


@dataclass(frozen=True)
class PartnerFile:
    """``/SLUG/NAME`` as staff see it."""

    slug: str
    name: str


@dataclass(frozen=True)
class RecipientsFolder:
    """``/.recipients`` as staff see it: one list per active partner."""


@dataclass(frozen=True)
class RecipientsFile:
    """``/.recipients/SLUG``: a partner's published recipient list."""

    slug: str


@dataclass(frozen=True)
class AgreementFile:
    """``/.agreements/SLUG``: a partner's data-sharing agreement, as published."""

    slug: str


@dataclass(frozen=True)
class PortalEnrolmentFile:
    """``/.portal-enrolment`` as a partner or staff user sees it: each read issues a
    portal enrolment code."""


@dataclass(frozen=True)
class InboxFile:
    """``/NAME`` as a partner sees it: one of its own files."""

    name: str


Target = (Root | PartnerFolder | PartnerFile | InboxFile | RecipientsFolder | RecipientsFile
          | AgreementFile | PortalEnrolmentFile)


def split(path: str) -> tuple[str, ...]:
    """The names of ``path`` after lexical resolution of ``.`` and ``..`` from ``/``.

    Relative paths start at ``/`` (every session's home). Raises :class:`UsageError` for
    control characters (NUL included) and over-long paths.
    """
    if len(path.encode("utf-8", "surrogatepass")) > MAX_PATH_BYTES:
        raise UsageError(f"invalid path: longer than {MAX_PATH_BYTES} bytes")
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in path):
        raise UsageError("invalid path: control characters are not allowed")
    names: list[str] = []
    for name in path.split("/"):
        if name in ("", "."):
            continue
        if name == "..":
            if names:
                names.pop()
            continue
        names.append(name)
    return tuple(names)


def canonical(path: str) -> str:
    """The absolute form of ``path`` (the answer to SFTP ``realpath``)."""
    return "/" + "/".join(split(path))


def resolve(path: str, role: Role | None) -> Target:
    """Map an SFTP path to the gateway object it names for an account of ``role``.

    Raises :class:`PolicyError` for paths the role may never touch and
    :class:`UsageError` (or :class:`NotFoundError`) for malformed names.
    """
    names = split(path)
    if role is Role.PARTNER:
        if not names:
            return Root()
        if names == (PORTAL_ENROLMENT_FILE,):
            return PortalEnrolmentFile()
        if len(names) == 1:
            return InboxFile(check_file_name(names[0]))
        raise PolicyError("permission denied: a partner inbox has no folders")
    if role is Role.STAFF:
        if not names:
            return Root()
        if names[0] == RECIPIENTS_FOLDER:
            return _recipients_target(names[1:])
        if names == (PORTAL_ENROLMENT_FILE,):
            return PortalEnrolmentFile()
        if names[0] == AGREEMENTS_FOLDER:
            if len(names) != 2:
                raise PolicyError("permission denied: /.agreements holds one file per "
                                  "partner and is not listed")
            return AgreementFile(_partner_slug(names[1]))
        slug = _partner_slug(names[0])
        if len(names) == 1:
            return PartnerFolder(slug)
        if len(names) == 2:
            return PartnerFile(slug, check_file_name(names[1]))
        raise PolicyError("permission denied: partner folders have no subfolders")
    raise PolicyError("permission denied: this account has no SFTP access")


def _recipients_target(names: tuple[str, ...]) -> RecipientsFolder | RecipientsFile:
    if not names:
        return RecipientsFolder()
    if len(names) == 1:
        return RecipientsFile(_partner_slug(names[0]))
    raise PolicyError("permission denied: recipient lists have no subfolders")


def _partner_slug(name: str) -> str:
    try:
        return check_slug(name)
    except UsageError:
        raise NotFoundError("no such partner folder") from None
