"""The runbooks run as written (tests/runbooks.py): installation, upgrade and rollback.

A node is installed from release A exactly as deploy/runbooks/installation.md says (the
install script, PostgreSQL with its owner and application roles, an S3 bucket on moto),
upgraded to release B as upgrade.md says, and rolled back to A; after each, `blindpost
version` names the release and a staff member signs in over SFTP (SSH key and one-time
code) to the node the current release runs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import psycopg
import pytest

from tests.integration.conftest import Release
from tests.runbooks import RUNBOOKS, Session, blocks, sftp_node, totp_secret
from tests.s3 import CREDENTIALS, create_bucket
from tests.unit.sftp_server.harness import write_key_pair

pytestmark = pytest.mark.integration

# The runbooks whose `sh` blocks the suite runs, and the test that runs all of them.
EXECUTED = {
    "installation.md": "test_install_upgrade_rollback",
    "upgrade.md": "test_install_upgrade_rollback",
    "backup-and-restore.md": "tests/integration/test_restore_drill.py",
}


def test_every_shell_block_is_run_or_marked_illustrative() -> None:
    for runbook in sorted(RUNBOOKS.glob("*.md")):
        found = blocks(runbook)
        assert all(b.language for b in found), f"{runbook.name}: a block without a language"
        runnable = [b for b in found if b.runnable]
        if runbook.name in EXECUTED:
            assert runnable, f"{runbook.name} is executed but has no runnable block"
        else:
            assert not runnable, (f"{runbook.name}: {', '.join(map(str, runnable))} run in no "
                                  "test: run them (EXECUTED) or mark them `sh illustrative`")


def test_the_parser_sees_indented_blocks_and_the_marker() -> None:
    upgrade = blocks(RUNBOOKS / "upgrade.md")
    assert any("install.sh --prefix /opt/blindpost switch" in b.text and b.runnable
               for b in upgrade)
    install = blocks(RUNBOOKS / "installation.md")
    assert [b.illustrative for b in install if "BLINDPOST_SFTP_LISTEN=" in b.text] == [True]


def _roles(base_url: str, database: str) -> tuple[str, str]:
    """The runbook's two roles and a database the owner owns; their URLs."""
    with psycopg.connect(f"{base_url}/postgres", autocommit=True) as connection:
        for role in ("blindpost_owner", "blindpost_app"):
            exists = connection.execute("SELECT 1 FROM pg_roles WHERE rolname = %s",
                                        (role,)).fetchone()
            if not exists:
                connection.execute(f"CREATE ROLE {role} LOGIN")  # Fixed names.
        connection.execute(f'CREATE DATABASE "{database}" OWNER blindpost_owner')
    def url(role: str) -> str:
        return base_url.replace("//postgres@", f"//{role}@") + f"/{database}"

    return url("blindpost_owner"), url("blindpost_app")


def _node_env(tmp_path: Path) -> dict[str, str]:
    return {**{k: v for k, v in os.environ.items()
               if not k.startswith(("BLINDPOST_", "VIRTUAL_ENV"))},
            "HOME": str(tmp_path / "home")}


# Two releases built and installed (each a virtual environment with the server extra): about
# a minute on an idle machine, several on a loaded one.
@pytest.mark.timeout(900)
def test_install_upgrade_rollback(tmp_path: Path, releases: tuple[Release, Release],
                                  postgres_base_url: str, s3_endpoint: str) -> None:
    old, new = releases
    root = tmp_path / "node"
    owner, app = _roles(postgres_base_url, f"r{tmp_path.name[-20:].replace('-', '_')}")
    env = {**_node_env(tmp_path), "owner": owner}

    # Step 1 and 4 of installation.md, in the directory holding release A's files.
    install = Session("installation.md", root=root, cwd=old.directory, env=env)
    env_file = install.node_path("/etc/blindpost") / "blindpost.env"
    install.run("useradd --system")
    env_file.write_text("\n".join([
        f"BLINDPOST_DATA_DIR={install.node_path('/var/lib/blindpost')}",
        f"BLINDPOST_DATABASE_URL={app}",
        f"BLINDPOST_STORE_URL=s3://{create_bucket(s3_endpoint)}/objects",
        f"BLINDPOST_S3_ENDPOINT_URL={s3_endpoint}",
        f"BLINDPOST_S3_REGION={CREDENTIALS['s3_region']}",
        f"BLINDPOST_S3_ACCESS_KEY_ID={CREDENTIALS['s3_access_key_id']}",
        f"BLINDPOST_S3_SECRET_ACCESS_KEY={CREDENTIALS['s3_secret_access_key']}",
        "BLINDPOST_LOG_FORMAT=json", ""]))
    initialised = install.run("blindpost init --data-dir")
    assert "One-time password for alice" in initialised.stdout
    assert oct(env_file.stat().st_mode & 0o777) == "0o600"
    install.run("systemctl enable --now blindpost-sftp")
    units = install.node_path("/etc/systemd/system")
    assert {p.name for p in units.iterdir()} >= {"blindpost-sftp.service",
                                                  "blindpost-purge.timer"}
    assert all("/opt/blindpost/current/bin/blindpost" in p.read_text()
               for p in units.glob("*.service"))
    checked = install.run("blindpost audit verify")
    assert "audit log OK" in checked.stdout
    assert not install.unrun()
    commands = install.host_commands()
    assert "systemctl enable --now blindpost-sftp blindpost-purge.timer" in commands
    assert any(c.startswith("chown -R blindpost:blindpost ") for c in commands)

    # Staff members who sign in after every step: one for each sign-in, since a one-time
    # code is refused the second time (the sign-ins may fall within one 30 s step).
    blindpost = str(install.node_path("/usr/local/bin") / "blindpost")
    service_env = {**env, **dict(line.split("=", 1) for line in
                                 env_file.read_text().splitlines() if line)}
    staff = []
    for name in ("clerk-a", "clerk-b", "clerk-c"):
        key = tmp_path / f"id_{name}"
        public = write_key_pair(key, name)
        Path(f"{key}.pub").write_text(public.openssh() + "\n")
        added = subprocess.run([blindpost, "user", "add", name, "--role", "staff",
                                "--ssh-key", f"{key}.pub"], env=service_env,
                               capture_output=True, text=True, timeout=120, check=True)
        staff.append((name, key, totp_secret(added.stdout)))

    def running(release: Release) -> None:
        version = subprocess.run([blindpost, "version"], env=service_env, capture_output=True,
                                 text=True, timeout=60, check=True)
        assert version.stdout.strip() == f"blindpost {release.version}"
        name, key, secret = staff.pop(0)
        with sftp_node([blindpost], service_env, user=name, key=key,
                       totp_secret=secret) as client:
            assert client.listdir(".") is not None

    running(old)

    # upgrade.md, in the directory holding release B's files.
    upgrade = Session("upgrade.md", root=root, cwd=new.directory,
                      env={**env, "new": new.version, "old": old.version})
    upgrade.run("audit checkpoint > witness-before-upgrade.txt")
    upgrade.run("sha256sum -c SHA256SUMS")
    current = install.node_path("/opt/blindpost") / "current"
    assert str(current.readlink()) == f"releases/{old.version}", "installing is not switching"
    upgrade.run("db upgrade")
    upgrade.run('switch "$new"')
    assert str(current.readlink()) == f"releases/{new.version}"
    checked = upgrade.run("blindpost audit verify --checkpoint witness-before-upgrade.txt")
    assert "audit log OK" in checked.stdout
    running(new)

    # Rolling back is switching back: release A is still there, untouched.
    upgrade.run('switch "$old"')
    assert str(current.readlink()) == f"releases/{old.version}"
    running(old)
    assert not upgrade.unrun()
    listed = subprocess.run(["sh", str(install.node_path("/opt/blindpost") / "install.sh"),
                             "--prefix", str(install.node_path("/opt/blindpost")), "list"],
                            capture_output=True, text=True, check=True)
    assert listed.stdout.split("\n")[:2] == [f"* {old.version}", f"  {new.version}"]
    shutil.rmtree(root / "opt")  # two releases of 180 MB of virtual environments.
