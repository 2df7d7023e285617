"""gateway.envelope loads each part of the age package when a name of it is first used."""

from __future__ import annotations

import subprocess
import sys

import pytest

from gateway import envelope


def test_every_exported_name_resolves_to_its_module_s_object() -> None:
    from gateway.envelope import decrypt, mlkem, stream

    for name in envelope.__all__:
        assert getattr(envelope, name) is not None, name
    assert envelope.Decryptor is decrypt.Decryptor
    assert envelope.require_post_quantum_backend is mlkem.require_backend
    assert envelope.CHUNK_SIZE == stream.CHUNK_SIZE
    assert set(envelope.__all__) <= set(dir(envelope))


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'Nothing'"):
        _ = envelope.Nothing
    with pytest.raises(ImportError):
        from gateway.envelope import Nothing  # noqa: F401


def test_importing_the_package_loads_none_of_its_parts() -> None:
    probe = ("import sys, gateway.envelope\n"
             "print(' '.join(m for m in sys.modules if m.startswith('gateway.envelope.')))\n"
             "gateway.envelope.parse_recipient\n"
             "print(' '.join(m for m in sys.modules if m.startswith('gateway.envelope.')))\n")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          check=True, timeout=60)
    before, after = done.stdout.splitlines()
    assert before == ""
    assert "gateway.envelope.keys" in after.split()
    assert "gateway.envelope.decrypt" not in after.split()
