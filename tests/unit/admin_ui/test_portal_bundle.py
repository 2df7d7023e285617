"""The portal's script is ours to vouch for: built from pinned, hashed packages, the same
bytes every time, with the licences of everything bundled, and no third-party origin."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
SOURCE = ROOT / "admin_ui/portal_js"
STATIC = ROOT / "admin_ui/static"
TEMPLATES = ROOT / "admin_ui/templates"


def test_every_dependency_is_pinned_exactly_with_an_integrity_hash() -> None:
    manifest = json.loads((SOURCE / "package.json").read_text())
    lock = json.loads((SOURCE / "package-lock.json").read_text())["packages"]
    for name, version in manifest["devDependencies"].items():
        assert re.fullmatch(r"\d+\.\d+\.\d+", version), (name, version)
        assert lock[f"node_modules/{name}"]["version"] == version
    for path, entry in lock.items():
        if path:
            assert entry["integrity"].startswith("sha512-"), path
            assert entry.get("resolved", "https://registry.npmjs.org/").startswith(
                "https://registry.npmjs.org/"), path


def test_rebuilding_gives_the_committed_bytes(tmp_path: Path) -> None:
    node = shutil.which("node")
    if node is None or not (SOURCE / "node_modules/esbuild").is_dir():
        pytest.fail("node or admin_ui/portal_js/node_modules is missing; run `make test-deps`")
    subprocess.run([node, "build.mjs", str(tmp_path)], cwd=SOURCE, check=True, timeout=120,
                   capture_output=True)
    for name in ("portal.js", "portal.LICENSES.txt"):
        assert (tmp_path / name).read_bytes() == (STATIC / name).read_bytes(), (
            f"admin_ui/static/{name} is not what its sources build; run `make portal-js`")


def test_the_licence_of_every_bundled_package_ships_beside_the_bundle() -> None:
    licences = (STATIC / "portal.LICENSES.txt").read_text()
    bundle = (STATIC / "portal.js").read_text()
    lock = json.loads((SOURCE / "package-lock.json").read_text())["packages"]
    assert "==== age-encryption 0.3.1 (BSD-3-Clause)" in licences
    for name in ("@noble/ciphers", "@noble/curves", "@noble/hashes", "@noble/post-quantum",
                 "@scure/base"):
        assert f"==== {name} {lock['node_modules/' + name]['version']} (MIT)" in licences
    assert "Copyright" in licences
    # The bundle loads nothing from elsewhere: no URL it could fetch code from.
    assert not re.search(r"(import\(|importScripts)\s*\(?\s*['\"]https?:", bundle)


def test_pages_load_scripts_only_from_static_and_never_inline() -> None:
    for template in TEMPLATES.glob("*.html"):
        text = template.read_text()
        for tag in re.findall(r"<script\b[^>]*>", text):
            assert re.fullmatch(r'<script src="/static/[a-z]+\.js" defer>', tag), (
                template.name, tag)
        assert not re.search(r"\son[a-z]+=", text), template.name
