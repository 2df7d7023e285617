"""The App's own duties: translating database errors, read sessions, setting changes."""

from __future__ import annotations

import dataclasses

import pytest

from gateway.app import App
from gateway.config import Settings
from gateway.errors import ConflictError
from tests.unit.gateway.factories import OPERATOR, audit_events


def test_setting_changes_are_audited_once(app: App) -> None:
    app.record_settings(component="serve")
    first = audit_events(app, "setting:change")
    assert {e["subject"] for e in first} == {f"setting:{name}"
                                            for name in app.settings.audited_values()}
    app.record_settings(component="sftp")
    assert len(audit_events(app, "setting:change")) == len(first)
    app.settings = dataclasses.replace(app.settings, lockout_threshold=7)
    app.record_settings(component="sftp")
    change = audit_events(app, "setting:change")[len(first):]
    assert [(e["subject"], e["details"]["old"], e["details"]["new"], e["actor"])
            for e in change] == [("setting:lockout_threshold", "5", "7", "system:sftp")]


def test_a_database_password_never_reaches_the_log() -> None:
    settings = Settings(database_url="postgresql://app:s3cret@db.example/blindpost")
    assert settings.audited_values()["database_url"] == (
        "postgresql://app:***@db.example/blindpost")


def test_a_lost_race_is_the_same_conflict_as_the_slow_path(app: App) -> None:
    app.partners.add(OPERATOR, slug="uni")
    with pytest.raises(ConflictError, match="partner 'uni' already exists"):
        app.partners.add(OPERATOR, slug="uni")
