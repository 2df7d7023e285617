"""deploy/: the systemd units verify and are sandboxed, the container and compose files
keep every Blindpost process non-root on a read-only root, the haproxy example is valid.

Docker does not run here, so the container and compose files are checked by parsing.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.unit.sftp_server.harness import require_tool

pytestmark = pytest.mark.integration
DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
UNITS = sorted((DEPLOY / "systemd").glob("*.service"))
INSTALLED = "/opt/blindpost/current/bin/blindpost"
# Stop timeout = shutdown_drain_seconds (default 10) + 15 s: the drain, the grace before a
# worker is killed, and the shutdown checkpoint (sftp_server/service.py).
STOP_SECONDS = 25
SANDBOX = {
    "User": "blindpost", "NoNewPrivileges": "yes", "ProtectSystem": "strict",
    "ProtectHome": "yes", "PrivateTmp": "yes", "PrivateDevices": "yes",
    "CapabilityBoundingSet": "", "MemoryDenyWriteExecute": "yes",
    "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
    "ReadWritePaths": "/var/lib/blindpost", "LimitCORE": "0", "UMask": "0077",
}
MAX_EXPOSURE = 2.0
# The witness runs on a partner's machine, under its own user and state directory.
WITNESS_SANDBOX = {**SANDBOX, "User": "blindpost-witness",
                   "ReadWritePaths": "/var/lib/blindpost-witness"}


def _directives(unit: Path) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in unit.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            found.setdefault(key.strip(), []).append(value.strip())
    return found


@pytest.fixture(scope="module")
def unit_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The units with ExecStart pointing at this checkout's blindpost (verify checks it)."""
    target = tmp_path_factory.mktemp("units")
    here = str(Path(sys.executable).parent / "blindpost")
    for unit in (DEPLOY / "systemd").iterdir():
        (target / unit.name).write_text(unit.read_text().replace(INSTALLED, here))
    return target


def test_units_verify(unit_dir: Path) -> None:
    analyze = require_tool("systemd-analyze")
    units = sorted(str(p) for p in unit_dir.iterdir())
    result = subprocess.run([analyze, "verify", "--man=no", *units], capture_output=True,
                            text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == ""


@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_units_are_sandboxed(unit: Path) -> None:
    directives = _directives(unit)
    sandbox = WITNESS_SANDBOX if unit.name == "blindpost-witness.service" else SANDBOX
    for key, value in sandbox.items():
        assert directives.get(key) == [value], f"{unit.name}: {key}={value}"
    assert "@system-service" in directives["SystemCallFilter"]
    assert all(INSTALLED in command for command in directives["ExecStart"])
    if directives["Type"] == ["simple"]:
        assert directives["KillMode"] == ["mixed"]
        assert directives["KillSignal"] == ["SIGTERM"]
        assert directives["TimeoutStopSec"] == [str(STOP_SECONDS)]


@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_security_exposure(unit_dir: Path, unit: Path) -> None:
    analyze = require_tool("systemd-analyze")
    result = subprocess.run([analyze, "security", "--offline=true", "--no-pager",
                             str(unit_dir / unit.name)], capture_output=True, text=True,
                            check=False)
    match = re.search(r"Overall exposure level for \S+: ([\d.]+)", result.stdout)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= MAX_EXPOSURE


def test_purge_timer_starts_the_purge_service() -> None:
    timer = _directives(DEPLOY / "systemd" / "blindpost-purge.timer")
    assert timer["OnCalendar"] and timer["Persistent"] == ["true"]
    service = _directives(DEPLOY / "systemd" / "blindpost-purge.service")
    assert [c.split()[1:] for c in service["ExecStart"]] == [["purge"]]


def _stages(containerfile: str) -> list[list[str]]:
    stages: list[list[str]] = []
    for line in containerfile.replace("\\\n", " ").splitlines():
        if line.strip() and not line.startswith("#"):
            if line.startswith("FROM "):
                stages.append([])
            stages[-1].append(line.strip())
    return stages


def test_container_image_runs_non_root_without_a_shell() -> None:
    final = _stages((DEPLOY / "container" / "Containerfile").read_text())[-1]
    assert final[0].startswith("FROM gcr.io/distroless/python3-debian12")
    assert not any(line.startswith("RUN ") for line in final), "no shell at run time"
    [user] = [line.split()[1] for line in final if line.startswith("USER ")]
    assert all(part.isdigit() and int(part) != 0 for part in user.split(":"))
    [entrypoint] = [line.removeprefix("ENTRYPOINT ") for line in final
                    if line.startswith("ENTRYPOINT ")]
    assert json.loads(entrypoint) == ["/opt/blindpost/current/bin/blindpost"]  # exec form


def test_compose_services_are_non_root_and_read_only() -> None:
    document = yaml.safe_load((DEPLOY / "compose" / "compose.yaml").read_text())
    services = document["services"]
    assert {"postgres", "minio", "blindpost-sftp", "blindpost-console"} <= set(services)
    ours = {name: s for name, s in services.items() if s.get("image") == "blindpost:latest"}
    assert len(ours) >= 5
    for name, service in ours.items():
        assert service["user"] == "65532:65532", name
        assert service["read_only"] is True, name
        assert service["cap_drop"] == ["ALL"], name
        assert "no-new-privileges:true" in service["security_opt"], name
        environment = service["environment"]
        assert environment["BLINDPOST_STORE_URL"].startswith("s3://"), name
        assert environment["BLINDPOST_DATABASE_URL"].startswith("postgresql://"), name
    # Only migrations and grants run as the owner; the services run as the app role.
    for name in ("blindpost-sftp", "blindpost-console", "blindpost-purge"):
        assert "blindpost_app:" in ours[name]["environment"]["BLINDPOST_DATABASE_URL"]
    assert ours["blindpost-grant"]["command"] == ["db", "grant", "blindpost_app", "--apply"]
    assert ours["blindpost-sftp"]["stop_grace_period"] == f"{STOP_SECONDS}s"


def test_compose_secrets_come_from_the_environment() -> None:
    text = (DEPLOY / "compose" / "compose.yaml").read_text()
    for secret in ("PASSWORD", "SECRET_ACCESS_KEY"):
        for line in text.splitlines():
            if secret in line and ":" in line and not line.strip().startswith("#"):
                assert "${" in line, line


def test_haproxy_example_is_valid() -> None:
    haproxy = require_tool("haproxy")
    config = DEPLOY / "haproxy" / "haproxy.cfg"
    result = subprocess.run([haproxy, "-c", "-f", str(config)], capture_output=True,
                            text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "send-proxy-v2" in config.read_text()
