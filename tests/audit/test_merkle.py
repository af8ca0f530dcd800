"""The Merkle tree against RFC 6962's reference vectors, and proofs on random trees."""

from __future__ import annotations

import random

from enclave.audit import merkle

# The reference inputs and tree heads of RFC 6962 (as used by Certificate Transparency's tests).
INPUTS = ["", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f"]
ROOTS = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
LEAVES = [merkle.leaf_hash(bytes.fromhex(x)) for x in INPUTS]
INCLUSION = [  # (leaf index, tree size, path)
    (0, 8, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (5, 8, ["bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
    (2, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (1, 5, ["6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]),
]
CONSISTENCY = [  # (old size, new size, proof)
    (1, 1, []),
    (1, 8, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (6, 8, ["0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
    (2, 5, ["5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]),
]


def test_tree_heads_match_rfc_6962():
    for size, expected in enumerate(ROOTS):
        assert merkle.root(LEAVES[:size]).hex() == expected


def test_the_frontier_resumes_where_it_was_packed():
    frontier = merkle.Frontier()
    for size, leaf in enumerate(LEAVES, 1):
        frontier.append(leaf)
        again = merkle.Frontier.unpack(size, frontier.packed())
        assert again.root().hex() == ROOTS[size]


def test_inclusion_proofs_match_the_reference_and_verify():
    for index, size, path in INCLUSION:
        proof = merkle.inclusion_proof(LEAVES[:size], index)
        assert [p.hex() for p in proof] == path
        root = bytes.fromhex(ROOTS[size])
        assert merkle.verify_inclusion(LEAVES[index], index, size, proof, root)
        assert not merkle.verify_inclusion(LEAVES[index], index, size, proof, bytes.fromhex(ROOTS[0]))


def test_consistency_proofs_match_the_reference_and_verify():
    for old, new, path in CONSISTENCY:
        proof = merkle.consistency_proof(LEAVES[:new], old)
        assert [p.hex() for p in proof] == path
        assert merkle.verify_consistency(old, new, bytes.fromhex(ROOTS[old]), bytes.fromhex(ROOTS[new]), proof)


def test_random_trees_prove_every_leaf_and_refuse_wrong_ones():
    rng = random.Random(6962)
    for _ in range(30):
        n = rng.randint(1, 70)
        leaves = [merkle.leaf_hash(i.to_bytes(2, "big") + rng.randbytes(rng.randint(0, 40))) for i in range(n)]
        root = merkle.root(leaves)
        for i in range(n):
            proof = merkle.inclusion_proof(leaves, i)
            assert merkle.verify_inclusion(leaves[i], i, n, proof, root)
            wrong = merkle.leaf_hash(b"not in the tree")
            assert not merkle.verify_inclusion(wrong, i, n, proof, root)
            if n > 1:
                assert not merkle.verify_inclusion(leaves[i], (i + 1) % n, n, proof, root)


def test_random_trees_are_consistent_with_their_prefixes_only():
    rng = random.Random(9162)
    leaves = [merkle.leaf_hash(rng.randbytes(8)) for _ in range(40)]
    for new in range(1, 41):
        for old in range(0, new + 1):
            proof = merkle.consistency_proof(leaves[:new], old)
            old_root, new_root = merkle.root(leaves[:old]), merkle.root(leaves[:new])
            assert merkle.verify_consistency(old, new, old_root, new_root, proof)
            if 0 < old < new:
                rewritten = [merkle.leaf_hash(b"changed")] + leaves[1:old]
                assert not merkle.verify_consistency(old, new, merkle.root(rewritten), new_root, proof)


def test_a_leaf_cannot_pass_for_a_node():
    left, right = LEAVES[1], LEAVES[2]
    assert merkle.leaf_hash(left + right) != merkle.node_hash(left, right)
