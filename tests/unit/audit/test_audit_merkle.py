"""Property tests of the incremental tree against the RFC 6962 definition."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.audit import merkle
from gateway.audit.errors import VerificationError


def reference_root(leaves: list[bytes]) -> bytes:
    """MTH straight from RFC 6962 section 2.1, recursively."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return merkle.leaf_hash(leaves[0])
    split = 1 << ((len(leaves) - 1).bit_length() - 1)
    return merkle.node_hash(reference_root(leaves[:split]), reference_root(leaves[split:]))


def leaves_of(count: int) -> list[bytes]:
    return [f"leaf {number}".encode() for number in range(count)]


@given(st.integers(min_value=0, max_value=70))
def test_roots_of_every_prefix_match_the_rfc_definition(count: int) -> None:
    leaves = leaves_of(count)
    tree = merkle.MemoryTree(leaves)
    builder = merkle.TreeBuilder()
    assert merkle.root_hash(0, tree) == merkle.EMPTY_ROOT == builder.root()
    for size in range(1, count + 1):
        builder.append(merkle.leaf_hash(leaves[size - 1]))
        assert merkle.root_hash(size, tree) == reference_root(leaves[:size]) == builder.root()


@settings(max_examples=30)
@given(st.integers(min_value=1, max_value=40))
def test_every_inclusion_and_consistency_proof_verifies(size: int) -> None:
    leaves = leaves_of(size)
    tree = merkle.MemoryTree(leaves)
    root = merkle.root_hash(size, tree)
    for index in range(size):
        merkle.verify_inclusion(index=index, size=size, hashed_leaf=merkle.leaf_hash(leaves[index]),
                                proof=merkle.inclusion_proof(index, size, tree), root=root)
    for old in range(1, size + 1):
        merkle.verify_consistency(size1=old, size2=size, root1=merkle.root_hash(old, tree),
                                  root2=root, proof=merkle.consistency_proof(old, size, tree))


@given(st.integers(min_value=2, max_value=40), st.data())
def test_a_flipped_bit_breaks_an_inclusion_proof(size: int, data: st.DataObject) -> None:
    tree = merkle.MemoryTree(leaves_of(size))
    index = data.draw(st.integers(min_value=0, max_value=size - 1))
    proof = merkle.inclusion_proof(index, size, tree)
    which = data.draw(st.integers(min_value=0, max_value=len(proof) - 1))
    broken = list(proof)
    broken[which] = bytes([broken[which][0] ^ 1]) + broken[which][1:]
    with pytest.raises(VerificationError):
        merkle.verify_inclusion(index=index, size=size, hashed_leaf=tree.nodes[(0, index)],
                                proof=broken, root=merkle.root_hash(size, tree))


def test_node_positions_follow_completion_order() -> None:
    tree = merkle.MemoryTree()
    order: list[merkle.Coord] = []
    for number in range(100):
        before = set(tree.nodes)
        tree.append(b"%d" % number)
        order.extend(sorted(set(tree.nodes) - before))
    assert [merkle.node_position(*coord) for coord in order] == list(range(len(order)))
    assert merkle.stored_node_count(100) == len(order)


def test_append_reads_only_the_left_siblings_it_needs() -> None:
    assert merkle.nodes_completed_by(0) == []
    assert merkle.nodes_completed_by(6) == []
    assert merkle.nodes_completed_by(7) == [(0, 6), (1, 2), (2, 0)]


def test_proofs_outside_the_tree_are_refused() -> None:
    with pytest.raises(ValueError, match="outside"):
        merkle.inclusion_ranges(5, 5)
    with pytest.raises(ValueError, match="no consistency proof"):
        merkle.consistency_ranges(0, 3)
