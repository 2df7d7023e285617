"""Every API endpoint by every kind of caller: who gets past authorization, who is refused.

A caller "gets through" when the answer is neither 401 nor 403: the request may still
fail for its own reasons (an unknown file is 404, a repeated disable 409). The table is
the role → permission table of :mod:`gateway.authz` as the API shows it, plus the rule
that standing credentials never decide keys.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient

from gateway import envelope
from gateway.app import App
from gateway.config import load_settings
from gateway.datadir import initialise
from gateway.db.models import Role
from gateway.tokens import NewToken
from tests.conftest import FakeClock
from tests.unit.admin_ui.console_support import Person, browser, enrolled
from tests.unit.gateway.factories import OPERATOR, account, actor, admin_token

ADMIN_S, AUDITOR_S, ADMIN_T, AUDITOR_T, NOBODY = ("admin session", "auditor session",
                                                  "admin token", "auditor token", "anonymous")
CALLERS = (ADMIN_S, AUDITOR_S, ADMIN_T, AUDITOR_T, NOBODY)
READ = {ADMIN_S, AUDITOR_S, ADMIN_T, AUDITOR_T}
MANAGE = {ADMIN_S, ADMIN_T}
PERSON_ADMIN = {ADMIN_S}
SESSIONS = {ADMIN_S, AUDITOR_S}
_unique = itertools.count()

# (method, path, body) → the callers that get through.
TABLE: list[tuple[str, str, object, set[str]]] = [
    ("GET", "/api/v1/me", None, READ),
    ("GET", "/api/v1/dashboard", None, READ),
    ("GET", "/api/v1/partners", None, READ),
    ("POST", "/api/v1/partners", {"slug": "p-{n}"}, MANAGE),
    ("GET", "/api/v1/partners/uni", None, READ),
    ("PATCH", "/api/v1/partners/uni", {"retention": "5d"}, MANAGE),
    ("GET", "/api/v1/partners/uni/agreement", None, READ),
    # A data-sharing agreement grants: proposed by a person, approved by another (issue 24).
    ("POST", "/api/v1/partners/uni/agreement", {"columns": ["birth_date"]}, PERSON_ADMIN),
    ("POST", "/api/v1/partners/spare/disable", None, MANAGE),
    ("POST", "/api/v1/partners/spare/enable", None, MANAGE),
    ("GET", "/api/v1/accounts", None, READ),
    ("POST", "/api/v1/accounts", {"username": "u-{n}", "role": "staff"}, MANAGE),
    # Authority: proposed by a person, never by a token (issue 20).
    ("POST", "/api/v1/accounts", {"username": "u-{n}", "role": "auditor"}, PERSON_ADMIN),
    ("POST", "/api/v1/accounts", {"username": "u-{n}", "role": "admin"}, PERSON_ADMIN),
    ("POST", "/api/v1/accounts/root-admin/reset-totp", None, PERSON_ADMIN),
    ("POST", "/api/v1/accounts/root-admin/ssh-keys", {"key": "{sshkey}"}, PERSON_ADMIN),
    ("POST", "/api/v1/accounts/root-admin/enable", None, PERSON_ADMIN),
    ("GET", "/api/v1/authority-changes", None, READ),
    ("GET", "/api/v1/authority-changes/1", None, READ),
    ("POST", "/api/v1/authority-changes/1/approve", {}, PERSON_ADMIN),
    ("POST", "/api/v1/authority-changes/1/approve/options", None, PERSON_ADMIN),
    ("POST", "/api/v1/authority-changes/1/withdraw", None, MANAGE),
    ("GET", "/api/v1/accounts/clerk", None, READ),
    ("POST", "/api/v1/accounts/clerk/disable", None, MANAGE),
    ("POST", "/api/v1/accounts/clerk/enable", None, MANAGE),
    ("POST", "/api/v1/accounts/clerk/reset-totp", None, MANAGE),
    ("POST", "/api/v1/accounts/clerk/unlock", None, MANAGE),
    ("POST", "/api/v1/accounts/clerk/ssh-keys", {"key": "{sshkey}"}, MANAGE),
    ("GET", "/api/v1/keys", None, READ),
    ("POST", "/api/v1/keys", {"partner": "uni", "recipient": "{recipient}"}, PERSON_ADMIN),
    ("POST", "/api/v1/keys/1/approve", {}, PERSON_ADMIN),
    ("POST", "/api/v1/keys/1/revoke", {}, PERSON_ADMIN),
    ("POST", "/api/v1/keys/1/approve/options", None, PERSON_ADMIN),
    ("POST", "/api/v1/keys/1/revoke/options", None, PERSON_ADMIN),
    ("GET", "/api/v1/transfers", None, READ),
    ("POST", "/api/v1/transfers/no-such-file/withdraw", None, MANAGE),
    ("POST", "/api/v1/transfers/no-such-file/purge", None, MANAGE),
    ("GET", "/api/v1/audit/events", None, READ),
    ("GET", "/api/v1/audit/events/0/proof", None, READ),
    ("POST", "/api/v1/audit/verify", None, READ),
    ("GET", "/api/v1/audit/checkpoint", None, READ),
    ("GET", "/api/v1/audit/export", None, READ),
    ("GET", "/api/v1/exposure?from=2026-11-02&to=2026-11-02", None, READ),
    ("GET", "/api/v1/tokens", None, PERSON_ADMIN),
    ("POST", "/api/v1/tokens", {"name": "t-{n}", "role": "auditor"}, PERSON_ADMIN),
    ("POST", "/api/v1/tokens", {"name": "t-{n}", "role": "admin"}, PERSON_ADMIN),
    ("POST", "/api/v1/tokens/spare/revoke", None, PERSON_ADMIN),
    # One's own notification address: a person's, with a mailbox; a token has none.
    ("POST", "/api/v1/me/notifications", {"email": "me@registry.example"}, SESSIONS),
    ("POST", "/api/v1/me/notifications/confirm", {"code": "12345678"}, SESSIONS),
]


class Callers:
    """One installation with a signed-in admin and auditor and a token of each role."""

    def __init__(self, app: App, clock: FakeClock) -> None:
        self.app = app
        self.people = {ADMIN_S: enrolled(app, clock, "alice"),
                       AUDITOR_S: enrolled(app, clock, "audrey", Role.AUDITOR)}
        self.tokens = {ADMIN_T: admin_token(app, "admin-token"),
                       AUDITOR_T: _auditor_token(app, "auditor-token")}
        _auditor_token(app, "spare")
        # A proposal for the approve, options and withdraw rows to find.
        app.accounts.add(actor(app, "root-admin"), username="proposed", role=Role.AUDITOR)
        app.partners.add(OPERATOR, slug="uni")
        app.partners.add(OPERATOR, slug="spare")
        account(app, "clerk", Role.STAFF)
        app.keys.propose(actor(app, "root-admin"), partner="uni",
                         recipient=str(envelope.generate_identity().recipient))
        self.anonymous = browser(app)

    def call(self, caller: str, method: str, path: str, body: object) -> int:
        body = _fill(body)
        if caller in self.people:
            person: Person = self.people[caller]
            headers = {"X-CSRF-Token": person.csrf}
            client: TestClient = person.client
        else:
            headers = ({"Authorization": f"Bearer {self.tokens[caller]}"}
                       if caller in self.tokens else {})
            client = self.anonymous
        kwargs = {"json": body} if body is not None else {}
        return client.request(method, path, headers=headers, **kwargs).status_code


def _auditor_token(app: App, name: str) -> str:
    new = app.tokens.create(OPERATOR, name=name, role=Role.AUDITOR)
    assert isinstance(new, NewToken)
    return new.token


def _fill(body: object) -> object:
    if not isinstance(body, dict):
        return body
    n = next(_unique)
    recipient = str(envelope.generate_identity(post_quantum=False).recipient)
    sshkey = Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    return {k: v.format(n=n, recipient=recipient, sshkey=sshkey) if isinstance(v, str) else v
            for k, v in body.items()}


@pytest.fixture(scope="module")
def callers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callers]:
    data_dir = tmp_path_factory.mktemp("roles") / "var"
    initialise(data_dir, admin="root-admin", environ={})
    clock = FakeClock()
    app = App(load_settings(data_dir=data_dir, environ={}), clock=clock)
    yield Callers(app, clock)
    app.close()


@pytest.mark.parametrize(("method", "path", "body", "allowed"), TABLE,
                         ids=[f"{m} {p}" for m, p, _, _ in TABLE])
@pytest.mark.parametrize("caller", CALLERS)
def test_endpoint_by_caller(callers: Callers, caller: str, method: str, path: str,
                            body: object, allowed: set[str]) -> None:
    status = callers.call(caller, method, path, body)
    if caller == NOBODY:
        assert status == 401
    elif caller in allowed:
        assert status not in (401, 403), status
    else:
        assert status == 403, status


def test_every_api_route_is_in_the_table(callers: Callers) -> None:
    from admin_ui.web import create_app

    document = create_app(callers.app).openapi()
    routes = {(method.upper(), path) for path, operations in document["paths"].items()
              for method in operations}
    covered = {(method, _template(path)) for method, path, _, _ in TABLE}
    assert routes <= covered, routes - covered


def _template(path: str) -> str:
    replacements = {"/authority-changes/1": "/authority-changes/{change_id}",
                    "/root-admin": "/{username}", "/uni": "/{slug}",
                    "/spare/disable": "/{slug}/disable",
                    "/spare/enable": "/{slug}/enable",
                    "/clerk": "/{username}", "/1/": "/{key_id}/", "/no-such-file/": "/{file_id}/",
                    "/0/proof": "/{index}/proof", "/spare/revoke": "/{name}/revoke"}
    path = path.partition("?")[0]
    for concrete, template in replacements.items():
        path = path.replace(concrete, template)
    return path
