"""`blindpost encrypt -o` and `decrypt -o` start without what they do not use.

At 256 MiB Python's start is a third of the run that bench/clients.py compares with
age's. These tests hold what was cut from it: hashlib and hmac (the envelope hashes with
cryptography, loaded anyway), concurrent.futures (made only when a stream splits a batch
between two threads), tempfile (atomic_output names its file itself) and rich (a progress
bar only on a terminal). They check what is imported, never how long it takes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from gateway.envelope import generate_identity

NOT_FOR_ENCRYPT_OR_DECRYPT = ("hashlib", "hmac", "_hashlib", "concurrent.futures", "tempfile",
                              "shutil", "rich")


def _imported(argv: list[str]) -> set[str]:
    probe = ("import sys, json, atexit\n"
             "atexit.register(lambda: print(json.dumps(sorted(sys.modules)), file=sys.stderr))\n"
             "from gateway.cli import run\n"
             f"sys.argv = ['blindpost', *{argv!r}]\n"
             "run()\n")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    return set(json.loads(result.stderr.strip().splitlines()[-1]))


def test_encrypt_and_decrypt_o_import_no_hashlib_tempfile_or_thread_pool(
        tmp_path: Path) -> None:
    identity = generate_identity(post_quantum=False)
    key = tmp_path / "k.key"
    key.write_text(identity.to_secret_string() + "\n")
    plain = tmp_path / "plain"
    plain.write_bytes(os.urandom(300_000))
    sealed, opened = tmp_path / "plain.age", tmp_path / "opened"
    for argv in (["encrypt", "-r", str(identity.recipient), "-o", str(sealed), str(plain)],
                 ["decrypt", "-i", str(key), "-o", str(opened), str(sealed)]):
        modules = _imported(argv)
        loaded = {m for m in modules
                  if m.partition(".")[0] in NOT_FOR_ENCRYPT_OR_DECRYPT
                  or m.startswith("concurrent.futures")}
        assert not loaded, (argv[0], sorted(loaded))
    assert opened.read_bytes() == plain.read_bytes()
