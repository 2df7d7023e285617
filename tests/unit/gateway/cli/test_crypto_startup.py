"""`blindpost encrypt -o` and `decrypt -o` start without what they do not use.

At 256 MiB Python's start is a third of the run that bench/clients.py compares with
age's. These tests hold what was cut from it: hashlib and hmac (the envelope hashes with
cryptography, loaded anyway), concurrent.futures (made only when a stream splits a batch
between two threads), tempfile (atomic_output names its file itself) and rich (a progress
bar only on a terminal); logging (these commands never log) and json; and the half of
the age package each does not use (encrypting loads no decrypting or armor code,
decrypting no encrypting code). They check what is imported, never how long it takes.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from gateway.envelope import Identity, decrypt_bytes, generate_identity, parse_identity

NOT_FOR_ENCRYPT_OR_DECRYPT = ("hashlib", "hmac", "_hashlib", "concurrent.futures", "tempfile",
                              "shutil", "rich", "logging", "json")
# Modules of the age package that one of the two has no use for.
NOT_FOR = {"encrypt": {"gateway.envelope.decrypt", "gateway.envelope.armor",
                       "gateway.envelope.convenience"},
           "decrypt": {"gateway.envelope.encrypt", "gateway.envelope.convenience"}}


def _imported(argv: list[str]) -> set[str]:
    # The probe itself imports nothing beyond the interpreter's own (no json).
    probe = ("import sys, atexit\n"
             "atexit.register(lambda: print(' '.join(sorted(sys.modules)), file=sys.stderr))\n"
             "from gateway.cli import run\n"
             f"sys.argv = ['blindpost', *{argv!r}]\n"
             "run()\n")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    return set(result.stderr.strip().splitlines()[-1].split())


def _round_trip(tmp_path: Path, identity: Identity, size: int
                ) -> tuple[list[list[str]], Path, Path]:
    """The encrypt -o and decrypt -o command lines of a random file of ``size`` bytes to
    and from ``identity``; the file, and where decrypt -o writes it back."""
    key = tmp_path / "k.key"
    key.write_text(identity.to_secret_string() + "\n")
    plain = tmp_path / "plain"
    plain.write_bytes(os.urandom(size))
    sealed, opened = tmp_path / "plain.age", tmp_path / "opened"
    return ([["encrypt", "-r", str(identity.recipient), "-o", str(sealed), str(plain)],
             ["decrypt", "-i", str(key), "-o", str(opened), str(sealed)]], plain, opened)


def test_encrypt_and_decrypt_o_import_only_what_they_use(
        tmp_path: Path) -> None:
    argvs, plain, opened = _round_trip(tmp_path, generate_identity(post_quantum=False),
                                       300_000)
    for argv in argvs:
        modules = _imported(argv)
        loaded = {m for m in modules
                  if m.partition(".")[0] in NOT_FOR_ENCRYPT_OR_DECRYPT
                  or m.startswith("concurrent.futures")}
        assert not loaded, (argv[0], sorted(loaded))
        assert not modules & NOT_FOR[argv[0]], (argv[0], sorted(modules & NOT_FOR[argv[0]]))
        # What they do use is loaded, so the test would see the others if they were.
        assert {"gateway.envelope.stream", "gateway.client.ranges"} <= modules
        # Classical keys: the hybrid keys' module (ML-KEM, HPKE) is not loaded.
        assert "gateway.envelope.mlkem" not in modules, argv[0]
    assert opened.read_bytes() == plain.read_bytes()


def test_hybrid_keys_load_their_module_when_met(tmp_path: Path) -> None:
    argvs, plain, opened = _round_trip(tmp_path, generate_identity(), 1000)
    for argv in argvs:
        assert "gateway.envelope.mlkem" in _imported(argv), argv[0]
    assert opened.read_bytes() == plain.read_bytes()


def _ended(argv: list[str], *, before: str = "") -> tuple[int, str, str]:
    """Exit code, stdout and stderr of the program run with ``argv``; stderr says
    ``teardown`` if the interpreter's teardown ran (it raises an audit event that
    ``os._exit`` never reaches)."""
    probe = ("import os, sys\n"
             "def hook(event, args, write=os.write):\n"
             "    if event == 'cpython.PyInterpreterState_Clear':\n"
             "        write(2, b'teardown\\n')\n"
             "sys.addaudithook(hook)\n"
             f"{before}\n"
             "from gateway.cli import run\n"
             f"sys.argv = ['blindpost', *{argv!r}]\n"
             "run()\n")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            timeout=120, check=False)
    return result.returncode, result.stdout, result.stderr


def test_a_conversion_that_succeeded_ends_without_the_teardown(tmp_path: Path) -> None:
    identity = generate_identity(post_quantum=False)
    plain, sealed = tmp_path / "plain", tmp_path / "plain.age"
    plain.write_bytes(os.urandom(300_000))
    code, _, err = _ended(["encrypt", "-r", str(identity.recipient), "-o", str(sealed),
                           str(plain)])
    assert (code, err) == (0, "")
    assert decrypt_bytes(sealed.read_bytes(), [identity]) == plain.read_bytes()
    # What the command wrote to a pipe arrives whole: the streams are flushed first.
    code, out, err = _ended(["keygen", "--classic"])
    assert code == 0
    assert "teardown" not in err
    assert parse_identity(out.splitlines()[-1]).recipient.kind == "x25519"


def test_the_teardown_runs_after_a_failure_another_command_or_with_a_thread_left(
        tmp_path: Path) -> None:
    identity = generate_identity(post_quantum=False)
    plain, sealed = tmp_path / "plain", tmp_path / "plain.age"
    plain.write_bytes(b"x")
    encrypt = ["encrypt", "-r", str(identity.recipient), "-o", str(sealed), str(plain)]
    code, _, err = _ended(["encrypt", "-r", str(identity.recipient), "-o", str(sealed),
                           str(tmp_path / "missing")])
    assert code == 1
    assert err.endswith("teardown\n")
    code, out, err = _ended(["version"])
    assert (code, err) == (0, "teardown\n")
    assert out.startswith("blindpost ")
    # A thread still running, or an exit handler, is left to the interpreter.
    thread = "import threading, time\nthreading.Thread(target=time.sleep, args=(0.2,)).start()"
    assert _ended(encrypt, before=thread) == (0, "", "teardown\n")
    handler = "import atexit\natexit.register(lambda: sys.stderr.write('handler\\n'))"
    assert _ended(encrypt, before=handler) == (0, "", "handler\nteardown\n")
