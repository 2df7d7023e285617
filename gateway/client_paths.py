"""Where the clients (``blindpost send``, ``fetch``, ``trust``) keep pins and state.

Kept apart from :mod:`gateway.config`: the clients need these two folders only, and
importing the settings module (its large ``Settings`` dataclass, TOML parser and address
parsing) was some 8 ms of every ``send``'s and ``fetch``'s start.
With ``gateway.config`` it is the only module that reads the environment.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ClientPaths:
    """Where ``blindpost send`` and ``fetch`` keep pins and state on a user's machine."""

    config_dir: Path
    state_dir: Path

    @property
    def known_hosts(self) -> Path:
        """Gateway host keys pinned on first use (OpenSSH known_hosts format)."""
        return self.config_dir / "known_hosts"

    @property
    def known_recipients(self) -> Path:
        """Partner keys pinned on first use."""
        return self.config_dir / "known_recipients"

    @property
    def known_agreements(self) -> Path:
        """Partners' data-sharing agreements pinned on first use (gateway.client)."""
        return self.config_dir / "known_agreements"

    @property
    def pending_agreements(self) -> Path:
        """Looser agreements waiting for ``blindpost trust``."""
        return self.state_dir / "pending_agreements"

    @property
    def pending_recipients(self) -> Path:
        """Changed partner keys waiting for ``blindpost trust``."""
        return self.state_dir / "pending_recipients"

    @property
    def fetched(self) -> Path:
        """What ``blindpost fetch`` already fetched."""
        return self.state_dir / "fetched.json"


def client_paths(environ: Mapping[str, str] | None = None) -> ClientPaths:
    """``$XDG_CONFIG_HOME/blindpost`` and ``$XDG_STATE_HOME/blindpost`` (XDG defaults)."""
    env = os.environ if environ is None else environ
    home = Path(env["HOME"]) if env.get("HOME") else Path.home()
    config = Path(env["XDG_CONFIG_HOME"]) if env.get("XDG_CONFIG_HOME") else home / ".config"
    state = (Path(env["XDG_STATE_HOME"]) if env.get("XDG_STATE_HOME")
             else home / ".local" / "state")
    return ClientPaths(config / "blindpost", state / "blindpost")
