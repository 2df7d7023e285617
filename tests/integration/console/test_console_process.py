"""`blindpost console` as its own process: plain HTTP with a warning, or TLS when configured."""

from __future__ import annotations

import datetime
import os
import re
import signal
import ssl
import subprocess
import urllib.request
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.integration.console.browser import BLINDPOST

pytestmark = pytest.mark.integration


def _self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "console.crt", directory / "console.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    return cert_path, key_path


def _console(tmp_path: Path, **extra: str) -> tuple[subprocess.Popen[str], str, str]:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("BLINDPOST_")},
           "BLINDPOST_DATA_DIR": str(tmp_path / "var"), **extra}
    subprocess.run([*BLINDPOST, "init", "--admin", "alice"], env=env, check=True,
                   capture_output=True, timeout=60)
    process = subprocess.Popen([*BLINDPOST, "console", "--listen", "127.0.0.1:0"], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout is not None
    line = process.stdout.readline()
    found = re.search(r"listening on 127\.0\.0\.1:\d+: open (https?://[^\s;]+)", line)
    assert found, line
    return process, found.group(1), line


def _stop(process: subprocess.Popen[str]) -> str:
    process.send_signal(signal.SIGTERM)
    _, errors = process.communicate(timeout=30)
    assert process.returncode == 0, errors
    return errors


def test_plain_http_says_it_expects_the_proxy(tmp_path: Path) -> None:
    process, origin, line = _console(tmp_path)
    try:
        assert origin.startswith("http://localhost:")
        assert "plain HTTP" in line
        with urllib.request.urlopen(origin + "/signin", timeout=10) as answer:
            assert answer.status == 200
            assert "Strict-Transport-Security" not in answer.headers
    finally:
        errors = _stop(process)
    assert "expects the reverse proxy" in errors


def test_tls_when_certificate_and_key_are_set(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    process, origin, _ = _console(tmp_path, BLINDPOST_CONSOLE_TLS_CERT=str(cert),
                                  BLINDPOST_CONSOLE_TLS_KEY=str(key))
    try:
        assert origin.startswith("https://localhost:")
        context = ssl.create_default_context(cafile=str(cert))
        with urllib.request.urlopen(origin + "/signin", timeout=10,
                                    context=context) as answer:
            assert answer.status == 200
            assert answer.headers["Strict-Transport-Security"].startswith("max-age=")
        request = urllib.request.Request(origin + "/signin", method="POST",
                                         data=b"username=alice&password=wrong-password")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=10, context=context)
        assert refused.value.code == 401
        refused.value.close()
    finally:
        errors = _stop(process)
    assert "expects the reverse proxy" not in errors
