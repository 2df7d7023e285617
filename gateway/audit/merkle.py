"""RFC 6962 / RFC 9162 Merkle tree: hashing, proofs from stored subtrees, verification.

The log stores the hash of every *complete perfect subtree*: node ``(level, index)``
covers leaves ``[index * 2**level, (index + 1) * 2**level)``. Appending leaf ``n``
stores its leaf hash and each subtree it completes, reading only the left siblings it
needs, so an append costs O(log n). The root of any size and every proof element is a
range hash composed from at most O(log n) such subtrees, read through a
:class:`NodeReader` in one batch. Nothing here touches a database; the audit log and
the tests supply readers.

Nodes are numbered in the order they are completed (a post-order walk), so that a
verifier can stream leaves and stored nodes side by side: see :func:`node_position`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from typing import Protocol

from gateway.audit.errors import VerificationError

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()
_LEAF_PREFIX = b"\x00"
_NODE_PREFIX = b"\x01"

Coord = tuple[int, int]
"""A perfect subtree as ``(level, index)``; level 0 is a leaf."""


class NodeReader(Protocol):
    """Source of stored perfect-subtree hashes."""

    def read_nodes(self, coords: Sequence[Coord]) -> list[bytes]:
        """Return the hash of each subtree in ``coords``, in the same order.

        Raise if one is not stored: a missing node means the store is damaged.
        """
        ...


def leaf_hash(leaf: bytes) -> bytes:
    """Hash a leaf: SHA-256(0x00 || leaf)."""
    return hashlib.sha256(_LEAF_PREFIX + leaf).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """Hash an interior node: SHA-256(0x01 || left || right)."""
    return hashlib.sha256(_NODE_PREFIX + left + right).digest()


def node_position(level: int, index: int) -> int:
    """Return the completion-order number of subtree ``(level, index)``, from 0.

    The subtree is completed by leaf ``j = (index + 1) * 2**level - 1``; before that
    leaf, a tree of ``j`` leaves holds ``2j - popcount(j)`` nodes, and the leaf and its
    newly completed ancestors follow in level order.
    """
    last_leaf = ((index + 1) << level) - 1
    return 2 * last_leaf - last_leaf.bit_count() + level


def stored_node_count(size: int) -> int:
    """Return how many perfect subtrees a tree of ``size`` leaves holds."""
    return 2 * size - size.bit_count()


def perfect_subtrees(begin: int, end: int) -> list[Coord]:
    """Split leaves ``[begin, end)`` into aligned perfect subtrees, left to right.

    Every range RFC 6962 hashes (a tree prefix, or the right part of a split) starts
    at a multiple of a power of two at least as large as the range, so the split
    follows the binary digits of its length, largest first.
    """
    coords: list[Coord] = []
    while begin < end:
        level = (end - begin).bit_length() - 1
        while begin % (1 << level):
            level -= 1
        coords.append((level, begin >> level))
        begin += 1 << level
    return coords


def fold_subtrees(hashes: Sequence[bytes]) -> bytes:
    """Combine perfect-subtree hashes (left to right) into the RFC 6962 range hash."""
    if not hashes:
        return EMPTY_ROOT
    result = hashes[-1]
    for left in reversed(hashes[:-1]):
        result = node_hash(left, result)
    return result


def nodes_completed_by(index: int) -> list[Coord]:
    """Return the left siblings whose hashes appending leaf ``index`` needs, lowest first."""
    trailing_ones = (~index & (index + 1)).bit_length() - 1
    return [(level, (index >> level) - 1) for level in range(trailing_ones)]


def append_leaf(index: int, hashed_leaf: bytes, reader: NodeReader) -> list[tuple[Coord, bytes]]:
    """Return the nodes to store when leaf ``index`` is appended, in completion order."""
    siblings = nodes_completed_by(index)
    sibling_hashes = reader.read_nodes(siblings) if siblings else []
    nodes: list[tuple[Coord, bytes]] = [((0, index), hashed_leaf)]
    current = hashed_leaf
    for level, sibling in enumerate(sibling_hashes, start=1):
        current = node_hash(sibling, current)
        nodes.append(((level, index >> level), current))
    return nodes


def _range_hashes(ranges: Sequence[tuple[int, int]], reader: NodeReader) -> list[bytes]:
    """Hash several leaf ranges, reading all their subtrees in one batch."""
    splits = [perfect_subtrees(begin, end) for begin, end in ranges]
    flat = [coord for split in splits for coord in split]
    hashes = reader.read_nodes(flat) if flat else []
    results: list[bytes] = []
    offset = 0
    for split in splits:
        results.append(fold_subtrees(hashes[offset:offset + len(split)]))
        offset += len(split)
    return results


def _split_point(length: int) -> int:
    """Return the largest power of two strictly smaller than ``length`` (``length >= 2``)."""
    return 1 << ((length - 1).bit_length() - 1)


def root_hash(size: int, reader: NodeReader) -> bytes:
    """Return the RFC 6962 root of the first ``size`` leaves."""
    return _range_hashes([(0, size)], reader)[0]


def inclusion_ranges(index: int, size: int) -> list[tuple[int, int]]:
    """Return the leaf ranges whose hashes form the RFC 6962 audit path, leaf side first."""
    if not 0 <= index < size:
        raise ValueError(f"index {index} is outside a tree of size {size}")
    ranges: list[tuple[int, int]] = []
    begin, end = 0, size
    while end - begin > 1:
        middle = begin + _split_point(end - begin)
        if index < middle:
            ranges.append((middle, end))
            end = middle
        else:
            ranges.append((begin, middle))
            begin = middle
    ranges.reverse()
    return ranges


def inclusion_proof(index: int, size: int, reader: NodeReader) -> list[bytes]:
    """Return the audit path of leaf ``index`` in the tree of ``size`` leaves."""
    return _range_hashes(inclusion_ranges(index, size), reader)


def consistency_ranges(size1: int, size2: int) -> list[tuple[int, int]]:
    """Return the leaf ranges of the RFC 6962 consistency proof from ``size1`` to ``size2``."""
    if not 0 < size1 <= size2:
        raise ValueError(f"no consistency proof from size {size1} to size {size2}")
    outer: list[tuple[int, int]] = []
    begin, end, known, whole = 0, size2, size1, True
    while end - begin != known:
        middle = begin + _split_point(end - begin)
        if known <= middle - begin:
            outer.append((middle, end))
            end = middle
        else:
            outer.append((begin, middle))
            known -= middle - begin
            begin, whole = middle, False
    # The old tree is a complete subtree here; its hash is only sent when the verifier
    # cannot know it already (it is not the whole old tree).
    inner = [] if whole else [(begin, end)]
    return inner + outer[::-1]


def consistency_proof(size1: int, size2: int, reader: NodeReader) -> list[bytes]:
    """Return the consistency proof between the trees of ``size1`` and ``size2`` leaves."""
    return _range_hashes(consistency_ranges(size1, size2), reader)


def verify_inclusion(*, index: int, size: int, hashed_leaf: bytes,
                     proof: Sequence[bytes], root: bytes) -> None:
    """Check an audit path (RFC 9162 section 2.1.3.2); raise :class:`VerificationError`."""
    if not 0 <= index < size:
        raise VerificationError(f"inclusion proof: index {index} is outside tree size {size}")
    _check_hash_sizes("inclusion proof", [hashed_leaf, *proof])
    fn, sn, computed = index, size - 1, hashed_leaf
    for sibling in proof:
        if sn == 0:
            raise VerificationError("inclusion proof: too many hashes")
        if fn & 1 or fn == sn:
            computed = node_hash(sibling, computed)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            computed = node_hash(computed, sibling)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:
        raise VerificationError("inclusion proof: too few hashes")
    if computed != root:
        raise VerificationError(f"inclusion proof: leaf {index} does not lead to the root "
                                f"of tree size {size}")


def verify_consistency(*, size1: int, size2: int, root1: bytes, root2: bytes,
                       proof: Sequence[bytes]) -> None:
    """Check a consistency proof (RFC 9162 section 2.1.4.2); raise :class:`VerificationError`.

    A proof from the empty tree is refused: it proves nothing, and accepting it would
    let a caller believe two trees were compared when they were not.
    """
    if size1 > size2:
        raise VerificationError(f"consistency proof: size {size1} is larger than size {size2}")
    if size1 == 0:
        raise VerificationError("consistency proof: the old tree is empty")
    if size1 == size2:
        if proof:
            raise VerificationError("consistency proof: equal sizes need an empty proof")
        if root1 != root2:
            raise VerificationError(f"consistency proof: two different roots for size {size1}")
        return
    _check_hash_sizes("consistency proof", proof)
    old, new = _consistency_roots(size1, size2, root1, proof)
    if old != root1:
        raise VerificationError(f"consistency proof: does not match the root of size {size1}")
    if new != root2:
        raise VerificationError(f"consistency proof: does not match the root of size {size2}")


def _check_hash_sizes(what: str, hashes: Sequence[bytes]) -> None:
    if any(len(hashed) != HASH_SIZE for hashed in hashes):
        raise VerificationError(f"{what}: every hash must be {HASH_SIZE} bytes")


def _consistency_roots(size1: int, size2: int, root1: bytes,
                       proof: Sequence[bytes]) -> tuple[bytes, bytes]:
    """Recompute both roots from a consistency proof for ``0 < size1 < size2``."""
    path = list(proof)
    if not path:
        raise VerificationError("consistency proof: empty proof for different sizes")
    if size1 & (size1 - 1) == 0:
        path.insert(0, root1)
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    old = new = path[0]
    for hashed in path[1:]:
        if sn == 0:
            raise VerificationError("consistency proof: too many hashes")
        if fn & 1 or fn == sn:
            old, new = node_hash(hashed, old), node_hash(hashed, new)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            new = node_hash(new, hashed)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:
        raise VerificationError("consistency proof: too few hashes")
    return old, new


class TreeBuilder:
    """Build a tree leaf by leaf in memory, keeping only the O(log n) right edge.

    The verifier streams the whole log through it; each append returns the nodes it
    completed, in the order :func:`node_position` numbers them, so they can be compared
    with the stored ones.
    """

    def __init__(self) -> None:
        self.size = 0
        self._edge: list[tuple[int, bytes]] = []

    @classmethod
    def resume(cls, size: int, reader: NodeReader) -> TreeBuilder:
        """Continue a stored tree of ``size`` leaves, reading its O(log n) right edge."""
        builder = cls()
        coords = perfect_subtrees(0, size)
        hashes = reader.read_nodes(coords) if coords else []
        builder.size = size
        builder._edge = [(level, hashed) for (level, _), hashed in
                         zip(coords, hashes, strict=True)]
        return builder

    def copy(self) -> TreeBuilder:
        """Return an independent copy (the edge is small)."""
        twin = TreeBuilder()
        twin.size, twin._edge = self.size, list(self._edge)
        return twin

    def append(self, hashed_leaf: bytes) -> list[bytes]:
        """Add a leaf hash; return it and the hashes of the subtrees it completed."""
        completed = [hashed_leaf]
        level, current = 0, hashed_leaf
        while self._edge and self._edge[-1][0] == level:
            _, left = self._edge.pop()
            current = node_hash(left, current)
            level += 1
            completed.append(current)
        self._edge.append((level, current))
        self.size += 1
        return completed

    def extend(self, hashed_leaves: Iterable[bytes], *,
               roots_at: Sequence[int] = ()) -> tuple[list[bytes], list[bytes]]:
        """Append many leaf hashes: :meth:`append` in one loop.

        Returns every hash :meth:`append` would have returned, in order, and the root
        at each size of ``roots_at`` (ascending, within the new leaves).
        """
        completed: list[bytes] = []
        roots: list[bytes] = []
        stops = iter(roots_at)
        stop = next(stops, None)
        edge, sha256 = self._edge, hashlib.sha256
        for leaf in hashed_leaves:
            hashed = leaf
            completed.append(hashed)
            level = 0
            while edge and edge[-1][0] == level:
                hashed = sha256(_NODE_PREFIX + edge.pop()[1] + hashed).digest()
                completed.append(hashed)
                level += 1
            edge.append((level, hashed))
            self.size += 1
            while self.size == stop:
                roots.append(self.root())
                stop = next(stops, None)
        return completed, roots

    def root(self) -> bytes:
        """Return the root of the leaves appended so far."""
        return fold_subtrees([hashed for _, hashed in self._edge])


class MemoryTree:
    """A whole tree in memory, readable as a :class:`NodeReader` (tests, tools)."""

    def __init__(self, leaves: Iterable[bytes] = ()) -> None:
        self.nodes: dict[Coord, bytes] = {}
        self.size = 0
        for leaf in leaves:
            self.append(leaf)

    def append(self, leaf: bytes) -> None:
        """Append one leaf (raw bytes, hashed here)."""
        for coord, hashed in append_leaf(self.size, leaf_hash(leaf), self):
            self.nodes[coord] = hashed
        self.size += 1

    def read_nodes(self, coords: Sequence[Coord]) -> list[bytes]:
        """Return stored subtree hashes; raise :class:`KeyError` for a missing one."""
        return [self.nodes[coord] for coord in coords]
