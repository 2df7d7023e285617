"""Driving the console in-process: a TestClient per person, signed in through the pages."""

from __future__ import annotations

import re
from dataclasses import dataclass

from fastapi.testclient import TestClient

from admin_ui.web import create_app
from gateway import totp
from gateway.app import App
from gateway.db.models import Role
from tests.conftest import FakeClock
from tests.unit.gateway.factories import add_console_account

ORIGIN = "http://localhost:8443"
PASSWORD = "correct horse battery staple"


@dataclass
class Person:
    """A signed-in console user: their browser, and what they know."""

    username: str
    client: TestClient
    secret: str
    app: App

    @property
    def token(self) -> str:
        return self.client.cookies["blindpost"]

    @property
    def csrf(self) -> str:
        return self.app.console_auth.resume(self.token).csrf

    def code(self, clock: FakeClock, *, ahead: int = 0) -> str:
        """A code for ``ahead`` steps later (±1 step is accepted, and each step once)."""
        from datetime import timedelta

        return totp.current_code(self.secret, now=clock() + timedelta(seconds=30 * ahead))

    def post(self, path: str, data: dict[str, str] | None = None, **kwargs: object) -> object:
        return self.client.post(path, data={"csrf": self.csrf, **(data or {})},
                                follow_redirects=False, **kwargs)  # type: ignore[arg-type]


def browser(app: App) -> TestClient:
    return TestClient(create_app(app), base_url=ORIGIN, headers={"origin": ORIGIN})


def enrolled(app: App, clock: FakeClock, username: str, role: Role = Role.ADMIN) -> Person:
    """Create ``username`` and complete their first sign-in (new password, TOTP)."""
    new = add_console_account(app, username, role)
    assert new.one_time_password is not None
    client = browser(app)
    answer = client.post("/signin", data={"username": username,
                                          "password": new.one_time_password},
                         follow_redirects=False)
    assert answer.headers["location"] == "/signin/enrol", answer.text
    page = client.get("/signin/enrol")
    shown = re.search(r'id="secret" class="secret">([A-Z2-7]+)<', page.text)
    if new.totp_uri is not None:
        # Made at the bootstrap and printed then: the first sign-in asks for its code and
        # shows no new secret (one enrolment).
        assert shown is None, page.text
        secret = new.totp_uri.split("secret=")[1].split("&")[0]
    else:
        assert shown is not None, page.text
        secret = shown.group(1)
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert csrf is not None
    done = client.post("/signin/enrol", data={
        "csrf": csrf.group(1), "password": PASSWORD, "repeat": PASSWORD,
        "code": totp.current_code(secret, now=clock())}, follow_redirects=False)
    assert done.status_code == 303, done.text
    assert done.headers["location"] == "/", done.text
    return Person(username, client, secret, app)
