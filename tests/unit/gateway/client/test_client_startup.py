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
