"""Breach-exposure reports: what was on the server in a window, encrypted to whom, and
who fetched it, from the verified audit log.

``app.exposure.report(actor, start=, end=, partner=, checkpoints=, unverified=)`` builds
an :class:`ExposureReport`; :func:`render_text`, :func:`render_json` and
:func:`render_csv` write it out (the CLI's ``blindpost exposure`` and the console use
these).
"""

from gateway.exposure.model import (
    AccountExposure,
    DownloadExposure,
    ExposureReport,
    FileExposure,
    KeyExposure,
    LogVerification,
    PartnerSummary,
    RecipientExposure,
    StoreCheck,
    StoreProblem,
    Window,
    parse_moment,
)
from gateway.exposure.render import render_csv, render_json, render_text
from gateway.exposure.service import ExposureService

__all__ = [
    "AccountExposure",
    "DownloadExposure",
    "ExposureReport",
    "ExposureService",
    "FileExposure",
    "KeyExposure",
    "LogVerification",
    "PartnerSummary",
    "RecipientExposure",
    "StoreCheck",
    "StoreProblem",
    "Window",
    "parse_moment",
    "render_csv",
    "render_json",
    "render_text",
]
