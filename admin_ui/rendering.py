"""Rendering pages: every template gets the session (for the menu) and its CSRF token."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse

from admin_ui.security import console
from gateway.authz import Permission, permits
from gateway.console_sessions import SessionInfo


def render(request: Request, template: str, context: dict[str, Any], *,
           current: SessionInfo | None, status: int = 200) -> HTMLResponse:
    """Render ``template``; ``can(...)`` reads the permission table to show or hide
    controls (the services still check every action)."""
    actor = current.actor if current else None
    data = {"current": current, "csrf": current.csrf if current else "",
            "can": lambda name: actor is not None and permits(actor, Permission(name)),
            **context}
    response: HTMLResponse = console(request).templates.TemplateResponse(
        request, template, data, status_code=status)
    return response
