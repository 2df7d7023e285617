"""RFC 6962 proof vectors (transparency-dev/merkle testdata), every happy path and corruption."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from gateway.audit import merkle
from gateway.audit.errors import VerificationError

VECTORS = Path(__file__).parent / "testdata" / "merkle"

# The eight leaves of the RFC 6962 reference test tree, which the vectors' happy paths use.
REFERENCE_LEAVES = [bytes.fromhex(h) for h in (
    "", "00", "10", "2021", "3031", "40414243", "5051525354555657",
    "606162636465666768696a6b6c6d6e6f")]


def _cases(kind: str) -> list[Any]:
    files = sorted((VECTORS / kind).rglob("*.json"))
    assert files, f"no {kind} vectors under {VECTORS}"
    return [pytest.param(json.loads(path.read_text()), id=str(path.relative_to(VECTORS)))
            for path in files]


def _b64(value: str) -> bytes:
    return base64.b64decode(value)


def _proof(case: dict[str, Any]) -> list[bytes]:
    return [_b64(item) for item in case["proof"] or []]


@pytest.mark.parametrize("case", _cases("inclusion"))
def test_inclusion_vector(case: dict[str, Any]) -> None:
    def check() -> None:
        merkle.verify_inclusion(index=case["leafIdx"], size=case["treeSize"],
                                hashed_leaf=_b64(case["leafHash"]), proof=_proof(case),
                                root=_b64(case["root"]))
    if case["wantErr"]:
        with pytest.raises(VerificationError):
            check()
    else:
        check()


@pytest.mark.parametrize("case", _cases("consistency"))
def test_consistency_vector(case: dict[str, Any]) -> None:
    def check() -> None:
        merkle.verify_consistency(size1=case["size1"], size2=case["size2"],
                                  root1=_b64(case["root1"]), root2=_b64(case["root2"]),
                                  proof=_proof(case))
    if case["wantErr"]:
        with pytest.raises(VerificationError):
            check()
    else:
        check()


def _happy(kind: str) -> list[Any]:
    """Happy paths over the reference tree (the numbered folders)."""
    return [case for case in _cases(kind) if not case.values[0]["wantErr"]
            and str(case.id).split("/")[1].isdigit()]


@pytest.mark.parametrize("case", _happy("inclusion"))
def test_generated_inclusion_proof_matches_vector(case: dict[str, Any]) -> None:
    tree = merkle.MemoryTree(REFERENCE_LEAVES[:case["treeSize"]])
    assert merkle.leaf_hash(REFERENCE_LEAVES[case["leafIdx"]]) == _b64(case["leafHash"])
    assert merkle.root_hash(tree.size, tree) == _b64(case["root"])
    assert merkle.inclusion_proof(case["leafIdx"], tree.size, tree) == _proof(case)


@pytest.mark.parametrize("case", [c for c in _happy("consistency") if c.values[0]["size1"] > 0
                                  and c.values[0]["size1"] != c.values[0]["size2"]])
def test_generated_consistency_proof_matches_vector(case: dict[str, Any]) -> None:
    tree = merkle.MemoryTree(REFERENCE_LEAVES[:case["size2"]])
    assert merkle.root_hash(case["size1"], tree) == _b64(case["root1"])
    assert merkle.root_hash(case["size2"], tree) == _b64(case["root2"])
    assert merkle.consistency_proof(case["size1"], case["size2"], tree) == _proof(case)
