"""The one path-mapping function: lexical, confined to /, nothing decoded."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.db.models import Role
from gateway.errors import GatewayError, NotFoundError, PolicyError, UsageError
from sftp_server.vfs import (
    InboxFile,
    PartnerFile,
    PartnerFolder,
    PortalEnrolmentFile,
    RecipientsFile,
    RecipientsFolder,
    Root,
    canonical,
    resolve,
    split,
)


@pytest.mark.parametrize(("path", "expected"), [
    ("", "/"), (".", "/"), ("/", "/"), ("..", "/"), ("/../..", "/"), ("a/./b/", "/a/b"),
    ("a/../b", "/b"), ("//a//b", "/a/b"), ("%2e%2e/x", "/%2e%2e/x"),
])
def test_canonical(path: str, expected: str) -> None:
    assert canonical(path) == expected


@given(st.text(max_size=200))
def test_no_path_escapes_root(path: str) -> None:
    try:
        names = split(path)
    except UsageError:
        return
    assert all(name not in ("", ".", "..") and "/" not in name for name in names)


def test_partner_paths() -> None:
    assert resolve("/", Role.PARTNER) == Root()
    assert resolve("../a.csv.age", Role.PARTNER) == InboxFile("a.csv.age")
    with pytest.raises(PolicyError):
        resolve("/beta/a.csv.age", Role.PARTNER)


def test_staff_paths() -> None:
    assert resolve("/acme", Role.STAFF) == PartnerFolder("acme")
    assert resolve("/acme/x.csv", Role.STAFF) == PartnerFile("acme", "x.csv")
    with pytest.raises(NotFoundError):
        resolve("/Not A Slug", Role.STAFF)
    with pytest.raises(PolicyError):
        resolve("/acme/sub/x.csv", Role.STAFF)


@pytest.mark.parametrize("role", [Role.ADMIN, Role.AUDITOR, None])
def test_other_roles_see_nothing(role: Role | None) -> None:
    with pytest.raises(PolicyError):
        resolve("/", role)


@pytest.mark.parametrize("path", ["a\x00b", "a\nb", "x" * 5000, "..\\etc", ".hidden",
                                  "n" * 300])
def test_malformed_paths_are_refused(path: str) -> None:
    with pytest.raises(GatewayError):
        resolve(path, Role.PARTNER)


def test_staff_see_recipient_lists_in_a_hidden_folder() -> None:
    assert resolve("/.recipients", Role.STAFF) == RecipientsFolder()
    assert resolve("/.recipients/acme", Role.STAFF) == RecipientsFile("acme")
    assert resolve("/acme/../.recipients/./acme", Role.STAFF) == RecipientsFile("acme")
    with pytest.raises(NotFoundError):
        resolve("/.recipients/Not A Slug", Role.STAFF)
    with pytest.raises(PolicyError):
        resolve("/.recipients/acme/x", Role.STAFF)


def test_partners_have_no_recipient_lists() -> None:
    with pytest.raises(UsageError):
        resolve("/.recipients", Role.PARTNER)
    with pytest.raises(PolicyError):
        resolve("/.recipients/acme", Role.PARTNER)


def test_partners_and_staff_have_a_portal_enrolment_file() -> None:
    for path in ("/.portal-enrolment", ".portal-enrolment", "/x/../.portal-enrolment"):
        assert resolve(path, Role.PARTNER) == PortalEnrolmentFile()
        assert resolve(path, Role.STAFF) == PortalEnrolmentFile()
    with pytest.raises(PolicyError):
        resolve("/.portal-enrolment", Role.ADMIN)
