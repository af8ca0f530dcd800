"""The Merkle tree of the audit log, as RFC 6962 (Certificate Transparency) defines it.

Leaf hash ``SHA-256(0x00 || entry)``, interior node ``SHA-256(0x01 || left || right)``: the distinct
prefixes stop a leaf being passed off as a node. A tree of ``n`` leaves splits at the largest power
of two below ``n``. A signed tree head (a checkpoint) commits to every record so far; an inclusion
proof shows that one record is in the tree without showing the others; a consistency proof shows
that a later tree extends an earlier one. Proofs are checked with the algorithms of RFC 9162 §2.1.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

EMPTY_ROOT = hashlib.sha256(b"").digest()


def leaf_hash(entry: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two smaller than ``n`` (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


class Frontier:
    """The tree's right edge: the roots of its perfect subtrees, largest first.

    Enough to append leaves and to compute the root at any size in O(log n), without keeping the
    leaves. The writer stores it with each checkpoint, so that a restart needs to reread only the
    records after the last checkpoint (it is not signed: its root is checked against the signed one).
    """

    def __init__(self, size: int = 0, subtrees: Sequence[bytes] = ()) -> None:
        if len(subtrees) != bin(size).count("1"):
            raise ValueError(f"a frontier of {size} leaves has {bin(size).count('1')} subtrees, not {len(subtrees)}")
        self.size = size
        self.subtrees = list(subtrees)

    def copy(self) -> "Frontier":
        return Frontier(self.size, self.subtrees)

    def append(self, leaf: bytes) -> None:
        node, n = leaf, self.size
        while n & 1:  # a subtree of the same height ends the frontier: merge them
            node = node_hash(self.subtrees.pop(), node)
            n >>= 1
        self.subtrees.append(node)
        self.size += 1

    def root(self) -> bytes:
        if not self.subtrees:
            return EMPTY_ROOT
        root = self.subtrees[-1]
        for subtree in reversed(self.subtrees[:-1]):
            root = node_hash(subtree, root)
        return root

    def packed(self) -> bytes:
        return b"".join(self.subtrees)

    @classmethod
    def unpack(cls, size: int, packed: bytes) -> "Frontier":
        return cls(size, [packed[i:i + 32] for i in range(0, len(packed), 32)])


def root(leaves: Sequence[bytes]) -> bytes:
    """The root of the tree over ``leaves`` (leaf hashes)."""
    frontier = Frontier()
    for leaf in leaves:
        frontier.append(leaf)
    return frontier.root()


def inclusion_proof(leaves: Sequence[bytes], index: int) -> list[bytes]:
    """RFC 6962 PATH(index, leaves): the sibling hashes from the leaf up to the root."""
    if not 0 <= index < len(leaves):
        raise ValueError(f"leaf {index} is not in a tree of {len(leaves)} leaves")

    def path(m: int, lo: int, hi: int) -> list[bytes]:
        if hi - lo == 1:
            return []
        k = _split(hi - lo)
        if m < k:
            return path(m, lo, lo + k) + [root(leaves[lo + k:hi])]
        return path(m - k, lo + k, hi) + [root(leaves[lo:lo + k])]

    return path(index, 0, len(leaves))


def verify_inclusion(leaf: bytes, index: int, size: int, proof: Sequence[bytes], root_hash: bytes) -> bool:
    """RFC 9162 §2.1.3.2: does ``proof`` put ``leaf`` at ``index`` of the tree with ``root_hash``?"""
    if not 0 <= index < size:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root_hash


def consistency_proof(leaves: Sequence[bytes], old_size: int) -> list[bytes]:
    """RFC 6962 PROOF(old_size, leaves): shows the tree of ``old_size`` leaves is a prefix of this one."""
    if not 0 <= old_size <= len(leaves):
        raise ValueError(f"a tree of {len(leaves)} leaves has no prefix of {old_size}")
    if old_size in (0, len(leaves)):
        return []

    def subproof(m: int, lo: int, hi: int, whole: bool) -> list[bytes]:
        if m == hi - lo:
            return [] if whole else [root(leaves[lo:hi])]
        k = _split(hi - lo)
        if m <= k:
            return subproof(m, lo, lo + k, whole) + [root(leaves[lo + k:hi])]
        return subproof(m - k, lo + k, hi, False) + [root(leaves[lo:lo + k])]

    return subproof(old_size, 0, len(leaves), True)


def verify_consistency(old_size: int, new_size: int, old_root: bytes, new_root: bytes,
                       proof: Sequence[bytes]) -> bool:
    """RFC 9162 §2.1.4.2: is the tree (new_size, new_root) an extension of (old_size, old_root)?"""
    if old_size == 0:
        return not proof
    if old_size == new_size:
        return not proof and old_root == new_root
    if old_size > new_size or not proof:
        return False
    path = list(proof)
    if old_size & (old_size - 1) == 0:  # a power of two: the old root is itself a node of the new tree
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return fr == old_root and sr == new_root and sn == 0
