"""Verifying the audit log: in its database, or in a JSON Lines export without the database.

Verification recomputes everything from the records themselves and trusts only the audit public
key: the hash chain from h_0 (each record against its stored chain hash, so the first record that
was edited, inserted, removed or moved is named), the Merkle root and chain hash at every
checkpoint (so records whose hashes were recomputed by whoever edited them are caught at the next
checkpoint), each checkpoint's signature (a checkpoint signed with another key is refused), and
the log's length against the largest checkpoint (truncation). In the database it also compares the
checkpoints with their second copy outside it.

Records after the newest checkpoint are protected by the chain only, until the next checkpoint.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from . import checkpoint_copy_path, merkle
from .checkpoints import LOG_ID, Checkpoint, read_copy, signature_problem
from .reader import AuditReader
from .records import GENESIS, BadRecord, canonical, check_sealed


@dataclass
class Problem:
    """Something that does not verify; ``seq`` is the first bad record, when it is about one."""

    message: str
    seq: int | None = None

    def __str__(self) -> str:
        return f"record {self.seq}: {self.message}" if self.seq is not None else self.message


@dataclass
class Report:
    records: int = 0
    first_seq: int = 1
    checkpoints: int = 0
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def first_bad_record(self) -> int | None:
        bad = [p.seq for p in self.problems if p.seq is not None]
        return min(bad) if bad else None


class ChainWalk:
    """Walks the records in order and stops at the first that does not verify.

    ``anchors`` are checkpoints whose signatures were already checked, by tree size. A walk that
    starts after record 1 (a partial export) checks the chain from ``previous`` and each
    checkpoint's chain hash, but cannot recompute Merkle roots.
    """

    def __init__(self, report: Report, anchors: dict[int, Checkpoint], first_seq: int = 1,
                 previous: bytes = GENESIS) -> None:
        self.report = report
        self.anchors = anchors
        self.expected = first_seq
        self.chain_hash = previous
        # The Merkle tree's right edge (see merkle.Frontier), kept as a plain list for speed.
        self.merkle = first_seq == 1
        self.subtrees: list[bytes] = []
        self.last_anchor = first_seq - 1
        self.stopped = False

    def fail(self, seq: int | None, message: str) -> None:
        self.report.problems.append(Problem(message, seq))
        self.stopped = True

    def run(self, records: Iterable[tuple[int, bytes, bytes]]) -> None:
        """Check (seq, entry, stored chain hash) in order, until the first problem.

        The loop runs a million times per verification: it keeps its state in local variables and
        does merkle.Frontier.append's work inline.
        """
        sha256 = hashlib.sha256
        anchors, subtrees, merkle_too = self.anchors, self.subtrees, self.merkle
        expected, chain_hash = self.expected, self.chain_hash
        try:
            for seq, entry, stored_chain_hash in records:
                if seq != expected:
                    if isinstance(seq, int) and seq > expected:
                        self.fail(expected, f"missing: after record {expected - 1} comes record {seq}"
                                            " (deleted or moved)")
                    elif isinstance(seq, int):
                        self.fail(seq, f"appears twice: record {seq} comes again where record {expected} should"
                                       " (one of them was inserted, or the records were reordered)")
                    else:
                        self.fail(expected, f"not a record where record {expected} should be: {seq!r}")
                    return
                chain_hash = sha256(chain_hash + entry).digest()
                if chain_hash != stored_chain_hash:
                    problem = _explain_mismatch(seq, entry)
                    self.fail(problem.seq, problem.message)
                    return
                if merkle_too:
                    node, n = sha256(b"\x00" + entry).digest(), seq - 1
                    while n & 1:
                        node = sha256(b"\x01" + subtrees.pop() + node).digest()
                        n >>= 1
                    subtrees.append(node)
                expected += 1
                if seq in anchors:
                    self.expected, self.chain_hash = expected, chain_hash
                    if not self._check_anchor(anchors[seq]):
                        return
        finally:
            self.expected, self.chain_hash = expected, chain_hash

    def _check_anchor(self, cp: Checkpoint) -> bool:
        root_ok = not self.merkle or merkle.Frontier(cp.tree_size, self.subtrees).root().hex() == cp.root_hash
        if cp.chain_hash != self.chain_hash.hex() or not root_ok:
            first = self.last_anchor + 1
            self.fail(first, f"records {first}..{cp.tree_size} do not match the checkpoint signed at {cp.time}"
                             f" (tree size {cp.tree_size}): one of them was changed and the chain hashes after it"
                             f" recomputed")
            return False
        self.last_anchor = cp.tree_size
        return True

    def finish(self) -> Report:
        report = self.report
        last = self.expected - 1
        report.records = last - report.first_seq + 1
        if self.stopped:
            return report
        beyond = [size for size in self.anchors if size > last]
        if beyond:
            cp = self.anchors[max(beyond)]
            self.fail(last + 1, f"missing: the log ends at record {last}, but the checkpoint signed at {cp.time}"
                                f" covers {cp.tree_size} records (truncated)")
        elif last > self.last_anchor:
            report.notes.append(f"records {self.last_anchor + 1}..{last} come after the last checkpoint checked:"
                                " the hash chain alone vouches for them (until the next checkpoint)")
        return report


def _explain_mismatch(seq: int, entry: bytes) -> Problem:
    """Why record ``seq`` breaks the chain, as precisely as its content tells."""
    try:
        numbered = json.loads(entry).get("seq")
    except ValueError:
        return Problem("edited: its text is not even JSON any more", seq)
    if isinstance(numbered, int) and numbered < seq:
        return Problem(f"inserted: the original record {numbered} now sits at position {seq}, so the record"
                       f" stored as {numbered} is not the one that was logged", numbered)
    if isinstance(numbered, int) and numbered > seq:
        return Problem(f"missing or moved: position {seq} holds record {numbered}", seq)
    return Problem("edited: its content does not match its chain hash (or a record before it was replaced and"
                   " the hashes up to here recomputed)", seq)


def _signed(public: Ed25519PublicKey, found: Iterable[Checkpoint], where: str, report: Report,
            already_checked: dict[int, Checkpoint] | None = None) -> dict[int, Checkpoint]:
    """The checkpoints whose signatures hold, by tree size; a problem for each of the others."""
    anchors: dict[int, Checkpoint] = {}
    for cp in found:
        if already_checked and already_checked.get(cp.tree_size) == cp:
            anchors[cp.tree_size] = cp
            continue
        problem = signature_problem(public, cp)
        if problem:
            report.problems.append(Problem(f"checkpoint at tree size {cp.tree_size} ({where}) is {problem}"))
        else:
            anchors[cp.tree_size] = cp
    return anchors


def verify_database(reader: AuditReader, public: Ed25519PublicKey, copy_path: Path | None = None) -> Report:
    """Verify the whole log in its database, and its checkpoints against their second copy."""
    report = Report()
    copy_path = copy_path or checkpoint_copy_path(reader.settings)
    stored = reader.checkpoints()
    copy, unreadable = read_copy(copy_path)
    report.problems += [Problem(p) for p in unreadable]
    report.checkpoints = len(stored)
    anchors = _signed(public, stored, "database", report)
    copied = _signed(public, copy, copy_path.name, report, already_checked=anchors)
    in_database = {cp.tree_size: cp for cp in stored}
    for size, cp in copied.items():
        if size not in in_database:
            report.problems.append(Problem(f"checkpoint at tree size {size} is in {copy_path.name} but not in the"
                                           " database (deleted from it?)"))
        elif in_database[size] != cp:
            report.problems.append(Problem(f"checkpoint at tree size {size} differs between the database and"
                                           f" {copy_path.name}"))
        anchors.setdefault(size, cp)
    # The service writes the copy after the database, so the copy may lack the newest checkpoint.
    in_copy = {cp.tree_size for cp in copy}
    for cp in stored:
        if cp.tree_size in in_copy:
            continue
        if cp is stored[-1]:
            report.notes.append(f"{copy_path.name} lacks the newest checkpoint (tree size {cp.tree_size});"
                                " the audit service adds it when it starts")
        else:
            report.problems.append(Problem(f"checkpoint at tree size {cp.tree_size} is missing from {copy_path}"))
    walk = ChainWalk(report, anchors)
    walk.run(reader.stream())
    return walk.finish()


def verify_export(path: Path, public: Ed25519PublicKey, extra_checkpoints: Iterable[Checkpoint] = ()) -> Report:
    """Verify a JSON Lines export (see :meth:`AuditReader.export`) without the database.

    ``extra_checkpoints`` (a copy of the checkpoints' second copy, say) are checked against the
    records they cover too; those newer than the export are left aside. The file is read twice:
    first for its header and checkpoints, then record by record.
    """
    report = Report()
    header, found = None, []
    with path.open("rb") as lines:
        for number, line in enumerate(lines, 1):
            if number == 1:
                header = _json_line(number, line)
            elif line.startswith(b'{"checkpoint"'):
                value = _json_line(number, line)
                try:
                    found.append(Checkpoint.from_json(value.get("checkpoint") if isinstance(value, dict) else None))
                except ValueError as exc:
                    report.problems.append(Problem(f"line {number}: {exc}"))
    head = header.get("audit_export") if isinstance(header, dict) else None
    try:
        first, last, complete = int(head["first_seq"]), int(head["last_seq"]), head["complete"]
        previous = bytes.fromhex(head["previous_chain_hash"])
        if head.get("log") != LOG_ID or len(previous) != 32 or first < 1 or not isinstance(complete, bool):
            raise ValueError
    except (KeyError, TypeError, ValueError):
        report.problems.append(Problem(f"line 1 is not the header of an {LOG_ID} export: {header!r}"))
        return report
    if first == 1 and previous != GENESIS:
        report.problems.append(Problem("an export from record 1 must start from the chain's h_0 (32 zero bytes)"))
        return report
    report.first_seq = first
    report.checkpoints = len(found)

    anchors = _signed(public, found, "export", report)
    extra = _signed(public, extra_checkpoints, "given checkpoints", report)
    # Given checkpoints past the export's end and not in it: the log grew after the export was made.
    newer = {size for size in extra if size > last and size not in anchors}
    for size, cp in extra.items():
        if size not in newer and anchors.setdefault(size, cp) != cp:
            report.problems.append(Problem(f"checkpoint at tree size {size} differs between the export and the"
                                           " given checkpoints"))
    if not complete:  # only what falls in the exported range can be checked
        anchors = {size: cp for size, cp in anchors.items() if first <= size <= last}
    if newer:
        report.notes.append(f"{len(newer)} given checkpoint(s) are newer than the export, which ends at record {last}")
    if first > 1:
        report.notes.append(f"the export starts at record {first}: checked against the checkpoints' chain hashes,"
                            " not their Merkle roots (those need every record from 1)")
    walk = ChainWalk(report, anchors, first, previous)

    def sealed_records(lines):
        for number, line in enumerate(lines, 1):
            if number == 1 or line.startswith(b'{"checkpoint"') or not line.strip():
                continue
            value = _json_line(number, line)
            seq = value.get("seq") if isinstance(value, dict) else None
            try:
                if isinstance(value, Problem):
                    raise ValueError(value.message)
                stored = bytes.fromhex(value.pop("chain_hash"))
                check_sealed(value)
            except (BadRecord, KeyError, TypeError, ValueError) as exc:
                walk.fail(seq if isinstance(seq, int) else walk.expected,
                          f"line {number} is not a sealed audit record with its chain_hash ({exc})")
                return
            yield seq, canonical(value), stored

    with path.open("rb") as lines:
        walk.run(sealed_records(lines))
    report = walk.finish()
    if report.ok and walk.expected - 1 != last:
        report.problems.append(Problem(f"missing: the export's header says it ends at record {last}, but its last"
                                       f" record is {walk.expected - 1} (cut short)", walk.expected))
    return report


def _json_line(number: int, line: bytes):
    try:
        return json.loads(line)
    except ValueError:
        return Problem(f"line {number} is not complete JSON (a cut or edited export?)")


def check_inclusion(proof: dict, public: Ed25519PublicKey) -> str | None:
    """Check an inclusion proof from :meth:`AuditReader.prove`; None when it holds, else why not."""
    try:
        cp = Checkpoint.from_json(proof["checkpoint"])
        record, index, size = proof["record"], proof["leaf_index"], proof["tree_size"]
        path = [bytes.fromhex(h) for h in proof["inclusion_proof"]]
    except (KeyError, TypeError, ValueError) as exc:
        return f"not an inclusion proof ({exc})"
    problem = signature_problem(public, cp)
    if problem:
        return f"the checkpoint is {problem}"
    if size != cp.tree_size or not isinstance(record, dict) or record.get("seq") != index + 1:
        return "the proof's record, position and checkpoint do not belong together"
    leaf = merkle.leaf_hash(canonical(record))
    if not merkle.verify_inclusion(leaf, index, size, path, bytes.fromhex(cp.root_hash)):
        return f"record {index + 1} as given is not in the log signed at {cp.time} (tree size {size})"
    return None


def check_consistency(proof: dict, public: Ed25519PublicKey) -> str | None:
    """Check a consistency proof from :meth:`AuditReader.prove_consistency`; None when it holds."""
    try:
        old, new = Checkpoint.from_json(proof["old_checkpoint"]), Checkpoint.from_json(proof["checkpoint"])
        path = [bytes.fromhex(h) for h in proof["consistency_proof"]]
    except (KeyError, TypeError, ValueError) as exc:
        return f"not a consistency proof ({exc})"
    for cp in (old, new):
        problem = signature_problem(public, cp)
        if problem:
            return f"the checkpoint at tree size {cp.tree_size} is {problem}"
    if not merkle.verify_consistency(old.tree_size, new.tree_size, bytes.fromhex(old.root_hash),
                                     bytes.fromhex(new.root_hash), path):
        return (f"the log signed at {new.time} (tree size {new.tree_size}) does not extend the one signed at"
                f" {old.time} (tree size {old.tree_size})")
    return None
