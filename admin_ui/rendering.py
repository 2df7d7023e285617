"""Rendering pages: every template gets the session (for the menu) and its CSRF token.

One error pattern for every form: a handler names its form (``keep``) before it acts; a
refusal (a :class:`~gateway.errors.GatewayError`, or :class:`FieldError` naming the
input at fault) re-renders the same page with a 4xx status, the values as typed and the
message next to the field, or at the top of the form when no single field is at fault
(:func:`admin_ui.web.form_failed`). Templates read ``typed(action, name, default)`` and
``fault(action, name)``; ``fault(action, "")`` is the form's own message. A form that is
only a button (enable, unlock, withdraw…) is kept with ``inline=False``: its message is
shown at the top of the page (``base.html``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from fastapi import Request
from fastapi.responses import HTMLResponse, Response

from admin_ui.security import console
from gateway.authz import Permission, permits
from gateway.console_sessions import SessionInfo
from gateway.errors import GatewayError

T = TypeVar("T")
# Fields never typed back into a page: a password goes back to the one who typed it
# only as an empty field.
SECRET_FIELDS = frozenset({"password", "repeat", "current_password", "new_password", "code",
                           "credential", "csrf"})


@dataclass
class Form:
    """A submitted form: where it posts, what was typed, and what was wrong with it."""

    action: str
    values: Mapping[str, str]
    page: Callable[[], Response]
    inline: bool = True
    errors: dict[str, str] = field(default_factory=dict)


class FieldError(Exception):
    """A refusal about one input of the form being handled."""

    def __init__(self, name: str, error: GatewayError) -> None:
        super().__init__(error.diagnostics())
        self.name = name
        self.error = error


def keep(request: Request, action: str, page: Callable[[], Response], *,
         inline: bool = True, **values: str) -> None:
    """Name the form this request submits, and the page that shows it again on refusal
    (``inline``: the template shows the form's messages next to it)."""
    request.state.form = Form(action, {k: v for k, v in values.items()
                                       if k not in SECRET_FIELDS}, page, inline)


def read(name: str, parse: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``parse(*args, **kwargs)``, its refusal attributed to the input ``name``."""
    try:
        return parse(*args, **kwargs)
    except GatewayError as exc:
        raise FieldError(name, exc) from exc


def render(request: Request, template: str, context: dict[str, Any], *,
           current: SessionInfo | None, status: int = 200) -> HTMLResponse:
    """Render ``template``; ``can(...)`` reads the permission table to show or hide
    controls (the services still check every action)."""
    actor = current.actor if current else None
    failed: Form | None = getattr(request.state, "failed_form", None)

    def typed(action: str, name: str, default: object = "") -> object:
        if failed is not None and failed.action == action and name in failed.values:
            return failed.values[name]
        return default

    def fault(action: str, name: str) -> str | None:
        return failed.errors.get(name) if failed is not None and failed.action == action \
            else None

    data = {"current": current, "csrf": current.csrf if current else "",
            "can": lambda name: actor is not None and permits(actor, Permission(name)),
            "typed": typed, "fault": fault,
            "page_error": failed.errors.get("") if failed and not failed.inline else None,
            **context}
    response: HTMLResponse = console(request).templates.TemplateResponse(
        request, template, data, status_code=status)
    return response
