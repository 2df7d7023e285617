"""Start-up of the client: paramiko's optional invoke import is skipped."""

from __future__ import annotations

import subprocess
import sys


def test_the_client_does_not_import_invoke() -> None:
    probe = ("import sys, gateway.client.connection, paramiko.config; "
             "print(sys.modules['invoke'] is None, paramiko.config.invoke is None)")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          check=True)
    assert done.stdout.split() == ["True", "True"]


def test_send_starts_without_the_modules_only_other_commands_need() -> None:
    # Every module imported is start-up time each `blindpost send` pays: the server's
    # settings (gateway.config, through gateway.cli.common) and fetch's modules are
    # imported by the commands that run them.
    probe = ("import sys, gateway.cli.client; "
             "print(' '.join(m for m in ('gateway.config', 'gateway.cli.common', "
             "'gateway.client.fetch', 'gateway.client.fetched', 'gateway.portal_code') "
             "if m in sys.modules) or 'none')")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          check=True)
    assert done.stdout.split() == ["none"]
