"""The upload page reads a file's columns and records in the browser with a port of
gateway.data_elements.ContentScan (admin_ui/portal_js/src/contents.js): here both read
the same files, fed in pieces of several sizes, and must say the same."""

from __future__ import annotations

import base64
import codecs
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from gateway.data_elements import HEAD_LIMIT, ContentScan

ROOT = Path(__file__).resolve().parents[3]
CONTENTS_JS = ROOT / "admin_ui/portal_js/src/contents.js"
PIECES = (1, 2, 7, 4096, 1 << 30)
FILES = [
    b"",
    b"HCN,Birth Date,postal_code\r\n1,1980-01-02,K1A\r\n2,1990-03-04,M5V\r\n",
    b"a;b;c\n1;2;3\n4;5;6",
    b"one column\nx\ny\n",
    b"name\tdob\tpc\n" + b"x\t1\t2\n" * 1000,
    b'"quoted, name","with ""quotes""",plain\n1,2,3\n',
    b'"multi\nline header",b\n1,2\n',
    b"a|b|c\n1|2|3\n",
    b"1980-01-02,K1A,42\n1,2,3\n",
    b"caf\xc3\xa9,na\xc3\xafve\n1,2\n",
    b"caf\xe9,b\n1,2\n",
    codecs.BOM_UTF8 + b"x,y\n1,2\n",
    codecs.BOM_UTF16_LE + "x,y\n1,2\n3,4".encode("utf-16-le"),
    codecs.BOM_UTF16_BE + "x,y\n1,2\n".encode("utf-16-be"),
    b"PK\x03\x04rest of a zip",
    b"%PDF-1.7\n",
    b"x\x01y,z\n",
    b"x" * (HEAD_LIMIT + 10),
    b"x,y",
    b"x,y\n",
    b"x,,y\n1,2,3\n",
    b"\xce\xb1\xce\xb2,\xd9\xa1x\n1,2\n",
    b"a" * 65 + b",b\n",
    b'a,"b\n',
    b"x,y\r\n1,2\r\n\r\n",
]
NODE_SCRIPT = """
import { readFileSync } from "node:fs";
import { ContentScan } from %s;
const files = JSON.parse(readFileSync(0, "utf8"));
const out = [];
for (const [data, piece] of files) {
  const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
  const scan = new ContentScan();
  for (let at = 0; at < bytes.length; at += piece) {
    scan.feed(bytes.slice(at, at + piece));
  }
  const c = scan.finish();
  out.push([c.format, c.columns, c.records, c.reason]);
}
console.log(JSON.stringify(out));
"""


def _python(data: bytes, piece: int) -> list[object]:
    scanner = ContentScan()
    for at in range(0, len(data), piece):
        scanner.feed(data[at:at + piece])
    found = scanner.finish()
    return [found.format, list(found.columns) if found.columns is not None else None,
            found.records, found.reason]


def test_the_browser_reads_every_file_as_the_gateway_does(tmp_path: Path) -> None:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is missing; run `make test-deps`")
    cases = [(data, piece) for data in FILES for piece in PIECES]
    payload = json.dumps([[base64.b64encode(d).decode(), p] for d, p in cases])
    script = tmp_path / "scan.mjs"
    script.write_text(NODE_SCRIPT % json.dumps(CONTENTS_JS.as_uri()))
    result = subprocess.run([node, str(script)], input=payload, capture_output=True,
                            text=True, timeout=60, check=True)
    browser = json.loads(result.stdout)
    for (data, piece), seen in zip(cases, browser, strict=True):
        assert seen == _python(data, piece), (data[:60], piece)
