"""Process logging: plain text for a terminal, one JSON object per line for collectors.

Log messages name accounts, files by id or name, sizes and addresses; they never carry
secrets, codes or file contents (the code that logs makes sure of that). The JSON form
adds only the time, level, logger, process label and, for an exception, its traceback.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

from gateway.config import Settings

OUR_PACKAGES = ("gateway", "sftp_server", "admin_ui")


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, process, message (and exc)."""

    def __init__(self, process: str) -> None:
        super().__init__()
        self._process = process

    def format(self, record: logging.LogRecord) -> str:
        document = {"time": datetime.fromtimestamp(record.created, UTC).isoformat(),
                    "level": record.levelname.lower(), "logger": record.name,
                    "process": self._process, "message": record.getMessage()}
        if record.exc_info:
            document["exc"] = self.formatException(record.exc_info)
        return json.dumps(document, ensure_ascii=False)


def configure_logging(settings: Settings, *, process: str) -> None:
    """Send this process's logs to stderr in ``settings.log_format`` at ``log_level``."""
    handler = logging.StreamHandler()
    if settings.log_format == "json":
        handler.setFormatter(JsonFormatter(process))
    else:
        handler.setFormatter(logging.Formatter(f"%(levelname)s {process} %(name)s: %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    # Libraries (paramiko, boto3) stay at warnings: their info lines are noise here.
    root.setLevel(max(logging.WARNING, logging.getLevelName(settings.log_level.upper())))
    for package in OUR_PACKAGES:
        logging.getLogger(package).setLevel(settings.log_level.upper())
