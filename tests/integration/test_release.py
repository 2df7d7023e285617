"""`make dist` builds the release; partners install its wheel as the client, the gateway
installs it with the server extra through deploy/install.sh, as the image does.

No container engine runs here (no daemon for docker; podman and buildah would need the
base images from a registry this machine cannot reach), so the image's own install step —
the Containerfile's `RUN … blindpost-install …` line, with its paths moved to a scratch
prefix — runs here, and then every Blindpost command of deploy/compose/compose.yaml runs
against that install with the compose file's environment, PostgreSQL and S3 (moto) in
place of the compose services.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
import yaml

import gateway
from tests.integration.conftest import REPO, Release
from tests.s3 import CREDENTIALS, create_bucket

pytestmark = pytest.mark.integration
DEPLOY = REPO / "deploy"


def _clean_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {**{k: v for k, v in os.environ.items()
               if not k.startswith(("BLINDPOST_", "VIRTUAL_ENV", "PYTHON"))},
            "HOME": str(tmp_path), **extra}


def test_dist_holds_the_release(releases: tuple[Release, Release]) -> None:
    release, _ = releases
    assert release.version == gateway.__version__
    names = sorted(p.name for p in release.directory.iterdir())
    assert names == sorted([f"blindpost-{release.version}-py3-none-any.whl",
                            f"blindpost-{release.version}.tar.gz", "install.sh", "systemd",
                            f"CHANGES-{release.version}.md", "SHA256SUMS"])
    checked = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=release.directory,
                             capture_output=True, text=True, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"blindpost-{release.version}-py3-none-any.whl: OK" in checked.stdout
    changes = (release.directory / f"CHANGES-{release.version}.md").read_text()
    assert changes.startswith(f"## {release.version}\n")
    assert "## " not in changes[3:], "one release's entry only"


def test_a_partner_installs_the_client_from_the_wheel(
        releases: tuple[Release, Release], tmp_path: Path) -> None:
    release, _ = releases
    venv = tmp_path / "client"
    env = _clean_env(tmp_path)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, env=env)
    subprocess.run([str(venv / "bin/pip"), "install", "--quiet", "--disable-pip-version-check",
                    str(release.wheel)], check=True, env=env, timeout=600)
    blindpost = str(venv / "bin/blindpost")

    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([blindpost, *args], cwd=tmp_path, env=env, capture_output=True,
                                text=True, timeout=120, check=False)
        if check:
            assert result.returncode == 0, (args, result.stderr)
        return result

    assert run("version").stdout.strip() == f"blindpost {release.version}"
    run("keygen", "-o", "partner.key")
    recipient = (tmp_path / "partner.key").read_text().split("public key: ")[1].split()[0]
    (tmp_path / "extract.csv").write_bytes(b"id,value\n1,2\n")
    run("encrypt", "-r", recipient, "-o", "extract.csv.age", "extract.csv")
    run("decrypt", "-i", "partner.key", "-o", "back.csv", "extract.csv.age")
    assert (tmp_path / "back.csv").read_bytes() == b"id,value\n1,2\n"
    refused = run("init", "--admin", "alice", check=False)
    assert refused.returncode == 1
    assert "pip install 'blindpost[server]'" in refused.stderr
    installed = subprocess.run([str(venv / "bin/pip"), "list", "--format=freeze"], env=env,
                               capture_output=True, text=True, check=True).stdout.lower()
    assert "sqlalchemy" not in installed and "fastapi" not in installed


@pytest.fixture(scope="module")
def image_install(releases: tuple[Release, Release],
                  tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Containerfile's install step, run as written with its paths in a scratch prefix;
    the `blindpost` the image's ENTRYPOINT names."""
    release, _ = releases
    text = (DEPLOY / "container" / "Containerfile").read_text().replace("\\\n", " ")
    [copy] = [line for line in text.splitlines() if line.startswith("COPY deploy/install.sh ")]
    script = copy.split()[2]
    [run] = [line for line in text.splitlines() if line.startswith("RUN ") and script in line]
    install = run.removeprefix("RUN ").split("&&")[0].strip()
    [entrypoint] = re.findall(r'^ENTRYPOINT \["([^"]+)"\]', text, re.MULTILINE)
    root = tmp_path_factory.mktemp("image")
    install = (install.replace(script, str(DEPLOY / "install.sh"))
               .replace("/opt/blindpost", str(root / "opt/blindpost"))
               .replace("/dist/", f"{release.directory}/"))
    subprocess.run(["bash", "-c", install], check=True, timeout=900,
                   env=_clean_env(root))
    return root / entrypoint.lstrip("/")


# Run by the release's interpreter: each module installed in its environment whose
# bytecode is missing or stale (the header holds the source's mtime and size).
_STALE_BYTECODE = """
import importlib.util, pathlib, sys, sysconfig
stale = []
for root in {sysconfig.get_path("purelib"), sysconfig.get_path("platlib")}:
    for source in pathlib.Path(root).rglob("*.py"):
        cached = pathlib.Path(importlib.util.cache_from_source(str(source)))
        try:
            header = cached.read_bytes()[:16]
        except OSError:
            stale.append(str(source))
            continue
        info = source.stat()
        flags = int.from_bytes(header[4:8], "little")
        fresh = header[:4] == importlib.util.MAGIC_NUMBER and (flags & 1 or (
            int.from_bytes(header[8:12], "little") == int(info.st_mtime) & 0xFFFFFFFF
            and int.from_bytes(header[12:16], "little") == info.st_size & 0xFFFFFFFF))
        if not fresh:
            stale.append(str(source))
print(len(stale), *stale[:10], sep="\\n")
"""


def test_the_image_install_holds_the_bytecode_of_every_module(image_install: Path,
                                                             tmp_path: Path) -> None:
    # The image's root is read-only and it sets PYTHONDONTWRITEBYTECODE, as a node with
    # root-owned releases cannot write __pycache__ either: a module compiled at install
    # (install.sh runs compileall) is one no command compiles again at every start.
    python = image_install.parent / "python"
    result = subprocess.run([str(python), "-c", _STALE_BYTECODE], capture_output=True,
                            text=True, timeout=120, check=True, env=_clean_env(tmp_path))
    count, *examples = result.stdout.splitlines()
    assert count == "0", examples


def _compose_env(service: dict[str, object], urls: dict[str, str],
                 s3_endpoint: str, bucket: str, data_dir: Path) -> dict[str, str]:
    environment = service["environment"]
    assert isinstance(environment, dict)
    env: dict[str, str] = {}
    for key, value in environment.items():
        role = re.search(r"//(blindpost_\w+):", str(value))
        if key == "BLINDPOST_DATABASE_URL" and role:
            env[key] = urls[role.group(1)]
        elif key == "BLINDPOST_STORE_URL":
            env[key] = f"s3://{bucket}/{str(value).rsplit('/', 1)[1]}"
        elif key == "BLINDPOST_S3_ENDPOINT_URL":
            env[key] = s3_endpoint
        elif key.startswith("BLINDPOST_S3_") and key != "BLINDPOST_S3_REGION":
            env[key] = CREDENTIALS[key.removeprefix("BLINDPOST_").lower()]
        elif key.endswith("_LISTEN"):
            env[key] = "127.0.0.1:0"
        else:
            env[key] = str(value)
    env["BLINDPOST_DATA_DIR"] = str(data_dir)  # the image's ENV, its volume
    return env


def test_the_compose_commands_run_on_the_image_install(
        image_install: Path, tmp_path: Path, postgres_base_url: str, s3_endpoint: str) -> None:
    services = yaml.safe_load((DEPLOY / "compose" / "compose.yaml").read_text())["services"]
    ours = [name for name, s in services.items() if s.get("image") == "blindpost:latest"]
    database = f"c{tmp_path.name[-12:].replace('-', '_')}"
    with psycopg.connect(f"{postgres_base_url}/postgres", autocommit=True) as connection:
        for role in ("blindpost_owner", "blindpost_app"):
            if not connection.execute("SELECT 1 FROM pg_roles WHERE rolname = %s",
                                      (role,)).fetchone():
                connection.execute(f"CREATE ROLE {role} LOGIN")  # Fixed names.
        connection.execute(f'CREATE DATABASE "{database}" OWNER blindpost_owner')
    urls = {role: postgres_base_url.replace("//postgres@", f"//{role}@") + f"/{database}"
            for role in ("blindpost_owner", "blindpost_app")}
    bucket = create_bucket(s3_endpoint)
    data_dir = tmp_path / "blindpost-data"
    # In the order compose starts them: init and grant complete before the services.
    order = ["blindpost-init", "blindpost-grant", "blindpost-sftp", "blindpost-console",
             "blindpost-purge"]
    assert sorted(order) == sorted(ours)
    for name in order:
        service = services[name]
        env = {**_clean_env(tmp_path),
               **_compose_env(service, urls, s3_endpoint, bucket, data_dir)}
        argv = [str(image_install), *[("127.0.0.1:0" if a.endswith((":2222", ":8443")) else a)
                                      for a in service["command"]]]
        if service.get("restart"):  # a long-running service: it starts, listens, stops.
            process = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE,
                                       stderr=subprocess.PIPE, text=True)
            assert process.stdout is not None
            line = process.stdout.readline()
            process.send_signal(signal.SIGTERM)
            _, errors = process.communicate(timeout=120)
            assert "listening on 127.0.0.1:" in line, (name, line, errors)
            assert process.returncode == 0, (name, errors)
        else:
            result = subprocess.run(argv, env=env, capture_output=True, text=True,
                                    timeout=300, check=False)
            assert result.returncode == 0, (name, result.stdout, result.stderr)
    assert (data_dir / "keys").is_dir()
