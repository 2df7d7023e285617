"""schemathesis against the API's own OpenAPI document, authenticated: no server error.

Requests come from an admin token (so every endpoint a token may use is exercised past
authorization) and from an admin's console session (for the key decisions and tokens).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from admin_ui.web import create_app
from gateway import envelope
from gateway.app import App
from gateway.config import load_settings
from gateway.datadir import initialise
from gateway.db.models import Role
from tests.conftest import FakeClock
from tests.unit.admin_ui.console_support import Person, enrolled
from tests.unit.gateway.factories import OPERATOR, account, actor, admin_token

# schemathesis's ASGI client names this host.
ORIGIN = "http://testserver"
# (as a session?, method, status) of every generated request.
STATUSES: Counter[tuple[bool, str, int]] = Counter()


@dataclass
class Target:
    schema: schemathesis.BaseSchema
    token: str
    person: Person
    app: App


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    data_dir = tmp_path_factory.mktemp("schema") / "var"
    initialise(data_dir, admin="root-admin", environ={})
    clock = FakeClock()
    app = App(load_settings(data_dir=data_dir, environ={}), clock=clock)
    app.partners.add(OPERATOR, slug="uni")
    account(app, "clerk", Role.STAFF)
    app.keys.propose(actor(app, "root-admin"), partner="uni",
                     recipient=str(envelope.generate_identity().recipient))
    token = admin_token(app, "fuzz")
    person = enrolled(app, clock, "alice")
    schema = schemathesis.openapi.from_asgi("/api/v1/openapi.json", create_app(app,
                                                                               origin=ORIGIN))
    yield Target(schema, token, person, app)
    app.close()


def _operations(schema: schemathesis.BaseSchema) -> list[object]:
    return [result.ok() for result in schema.get_all_operations()]


def test_no_server_error(target: Target) -> None:
    """Every operation, a dozen generated requests each, as a token and as a session.

    (schemathesis's pytest plugin does not load under this pytest, so the operations are
    driven through its strategies directly.)
    """
    operations = _operations(target.schema)
    assert len(operations) >= 30
    as_token = {"Authorization": f"Bearer {target.token}"}
    for operation in operations:
        _exercise(operation, as_token)
    for operation in operations:
        _exercise(operation, {"X-CSRF-Token": target.person.csrf},
                  cookies={"blindpost": target.person.token})
    # The generated requests got past authentication and changed things.
    assert not [key for key in STATUSES if key[0] is False and key[2] == 401]
    assert sum(n for (_, _, status), n in STATUSES.items() if status < 300) > 100


def _exercise(operation: object, headers: dict[str, str],
              cookies: dict[str, str] | None = None) -> None:
    @given(case=operation.as_strategy())  # type: ignore[attr-defined]
    @settings(max_examples=12, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
    def run(case: schemathesis.Case) -> None:
        # Our credentials replace whatever the generator put in (it fills the bearer
        # scheme with made-up tokens, whose failures would lock the test's address out).
        case.headers = {k: v for k, v in (case.headers or {}).items()
                        if k.lower() not in ("authorization", "x-csrf-token")} | headers
        response = case.call_and_validate(cookies=cookies, checks=[not_a_server_error])
        STATUSES[(bool(cookies), case.method, response.status_code)] += 1

    run()
