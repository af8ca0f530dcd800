"""Tampering of every kind is found, and the first bad record named: in the database (SQLite and
PostgreSQL), through ``enclave audit verify``'s own functions, and in a JSON Lines export.

The log: 45 records written through the real service, checkpoints at 10, 20, 30, 40 and 45 (the
stop). The tamperer is root on the host: it drops the append-only triggers and the check that a
row's seq matches its record, edits rows, and recomputes hashes where that helps it.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import subprocess
import sys

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from enclave.audit import checkpoints, models
from enclave.audit.records import GENESIS, canonical
from enclave.audit.verify import verify_export

from .conftest import AuditHome, execution

RECORDS = 45


@pytest.fixture
def sealed_log(tmp_path, backend):
    home = AuditHome(tmp_path / "home", backend, checkpoint_every_records=10)
    home.start()
    client = home.client()
    for i in range(RECORDS):
        client.append(**execution(i, user=("alice", "bob", "王芳")[i % 3]))
    assert home.stop() == 0
    assert [cp.tree_size for cp in home.reader().checkpoints()] == [10, 20, 30, 40, 45]
    yield home
    home.cleanup()


class Tamperer:
    """Root with the database open for writing, bypassing the audit service."""

    def __init__(self, home: AuditHome) -> None:
        url = home.settings.audit_db_url
        self.home = home
        self.postgres = url.startswith("postgresql")
        if self.postgres:
            import psycopg

            self.db = psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True)
            self.run("ALTER TABLE audit_records DROP CONSTRAINT ck_audit_records_seq_in_entry")
            for table in ("audit_records", "audit_checkpoints"):
                self.run(f"DROP TRIGGER {table}_append_only ON {table}")
        else:
            self.db = sqlite3.connect(models.sqlite_path(url), isolation_level=None)
            self.run("PRAGMA ignore_check_constraints = ON")
            for table in ("audit_records", "audit_checkpoints"):
                for verb in ("update", "delete"):
                    self.run(f"DROP TRIGGER {table}_no_{verb}")

    def run(self, sql: str, *params):
        return self.db.execute(sql.replace("?", "%s") if self.postgres else sql, params)

    def entry(self, seq: int) -> dict:
        text = self.run("SELECT entry FROM audit_records WHERE seq = ?", seq).fetchone()[0]
        return text if isinstance(text, dict) else json.loads(text)

    def chain_hash(self, seq: int) -> bytes:
        return bytes(self.run("SELECT chain_hash FROM audit_records WHERE seq = ?", seq).fetchone()[0])

    def rows_from(self, seq: int) -> list[tuple[int, dict, bytes]]:
        return [(s, self.entry(s), self.chain_hash(s)) for s in range(seq, RECORDS + 1)]

    def write(self, seq: int, record: dict, chain_hash: bytes) -> None:
        self.run("DELETE FROM audit_records WHERE seq = ?", seq)
        self.run("INSERT INTO audit_records (seq, entry, chain_hash) VALUES (?, ?, ?)",
                 seq, canonical(record).decode(), chain_hash)

    def close(self) -> None:
        self.db.close()


def chained(previous: bytes, record: dict) -> bytes:
    return hashlib.sha256(previous + canonical(record)).digest()


def other_key_checkpoint(cp: checkpoints.Checkpoint) -> checkpoints.Checkpoint:
    """The same tree head, signed by a key that is not the audit key (its own key id, honestly)."""
    other = Ed25519PrivateKey.generate()
    return checkpoints.sign(other, cp.tree_size, cp.time, bytes.fromhex(cp.root_hash), bytes.fromhex(cp.chain_hash))


# -- in the database --


def edit(t: Tamperer) -> None:
    record = t.entry(17)
    record["actor"] = "mallory"
    t.write(17, record, t.chain_hash(17))


def delete(t: Tamperer) -> None:
    t.run("DELETE FROM audit_records WHERE seq = 17")


def insert(t: Tamperer) -> None:
    rows = t.rows_from(17)
    for seq, _, _ in reversed(rows):  # make room: every row from 17 moves up one
        t.run("UPDATE audit_records SET seq = seq + 1 WHERE seq = ?", seq)
    forged = {**rows[0][1], "actor": "alice", "detail": {"kernel": "k1", "code": "print('nothing')",
                                                          "code_sha256": "0" * 64}}
    t.write(17, forged, chained(t.chain_hash(16), forged))  # a well-chained forgery


def reorder(t: Tamperer) -> None:
    (_, first, h1), (_, second, h2) = t.rows_from(17)[:2]
    t.write(17, second, h2)
    t.write(18, first, h1)


def truncate(t: Tamperer) -> None:
    t.run("DELETE FROM audit_records WHERE seq > 35")


def truncate_with_its_checkpoints(t: Tamperer) -> None:
    t.run("DELETE FROM audit_records WHERE seq > 35")
    t.run("DELETE FROM audit_checkpoints WHERE tree_size > 35")


def rewrite_with_recomputed_hashes(t: Tamperer) -> None:
    previous = t.chain_hash(16)
    for seq, record, _ in t.rows_from(17):
        if seq == 17:
            record["actor"] = "mallory"
        previous = chained(previous, record)
        t.write(seq, record, previous)


def forge_checkpoint(t: Tamperer) -> None:
    t.run("UPDATE audit_checkpoints SET root_hash = ? WHERE tree_size = 20", "ab" * 32)


def sign_with_another_key(t: Tamperer) -> None:
    row = t.run("SELECT tree_size, time, root_hash, chain_hash, key_id, signature FROM audit_checkpoints"
                " WHERE tree_size = 45").fetchone()
    forged = other_key_checkpoint(checkpoints.Checkpoint(*row))
    t.run("UPDATE audit_checkpoints SET key_id = ?, signature = ? WHERE tree_size = 45", forged.key_id, forged.signature)
    lines = t.home.copy_path.read_text().splitlines()
    lines[-1] = json.dumps(forged.to_json(), sort_keys=True)
    t.home.copy_path.write_text("\n".join(lines) + "\n")


DATABASE_TAMPERING = {  # kind: (tamper, first bad record, words of the first problem)
    "edit": (edit, 17, "record 17: edited"),
    "delete": (delete, 17, "record 17: missing: after record 16 comes record 18"),
    "insert": (insert, 17, "record 17: inserted: the original record 17 now sits at position 18"),
    "reorder": (reorder, 17, "record 17: missing or moved: position 17 holds record 18"),
    "truncate": (truncate, 36, "record 36: missing: the log ends at record 35, but the checkpoint"),
    "truncate with its checkpoints": (truncate_with_its_checkpoints, 36, "is in checkpoints.jsonl but not in the database"),
    "rewrite with recomputed hashes": (rewrite_with_recomputed_hashes, 11, "records 11..20 do not match the checkpoint"),
    "forged checkpoint": (forge_checkpoint, None, "checkpoint at tree size 20 (database) is its signature does not verify"),
    "checkpoint signed with another key": (sign_with_another_key, None, "checkpoint at tree size 45 (database) is signed"
                                                                        " with another key"),
}


@pytest.mark.parametrize("kind", list(DATABASE_TAMPERING))
def test_tampering_in_the_database_is_found_and_named(sealed_log, kind):
    assert sealed_log.verify().ok
    tamper, first_bad, words = DATABASE_TAMPERING[kind]
    t = Tamperer(sealed_log)
    try:
        tamper(t)
    finally:
        t.close()
    report = sealed_log.verify()
    assert not report.ok
    assert report.first_bad_record == first_bad, report.problems
    assert any(words in str(p) for p in report.problems), [str(p) for p in report.problems]


def test_the_cli_names_the_first_bad_record_and_exits_1(sealed_log):
    enclave = [sys.executable, "-c", "from enclave.cli import main; main()", "audit", "verify"]
    ok = subprocess.run(enclave, env=sealed_log.env(), capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0 and ok.stdout.startswith("OK: the audit log: records 1..45, 5 checkpoint(s)"), ok.stderr
    t = Tamperer(sealed_log)
    edit(t)
    t.close()
    bad = subprocess.run(enclave, env=sealed_log.env(), capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1
    assert bad.stderr.splitlines()[:2] == ["FAILED: the audit log: the first bad record is 17",
                                           "  record 17: edited: its content does not match its chain hash (or a"
                                           " record before it was replaced and the hashes up to here recomputed)"]


def test_the_service_will_not_continue_a_log_whose_tail_was_changed(sealed_log):
    sealed_log.start()
    client = sealed_log.client()
    for i in range(5):
        client.append(**execution(100 + i))
    sealed_log.kill()  # no last checkpoint: records 46..50 are protected by the chain alone
    t = Tamperer(sealed_log)
    record = t.entry(48)
    record["detail"]["code"] = "print('something else')"
    t.write(48, record, t.chain_hash(48))
    t.close()
    refused = subprocess.run([sys.executable, "-m", "enclave.audit.service"], env=sealed_log.env(),
                             capture_output=True, text=True, timeout=120)
    assert refused.returncode == 1
    assert "record 48 does not match its chain hash" in refused.stderr


# -- in a JSON Lines export, without the database --


def export_lines(home: AuditHome, tmp_path) -> list[str]:
    path = tmp_path / "export.jsonl"
    with path.open("w", encoding="utf-8") as out:
        home.reader().export(out)
    return path.read_text(encoding="utf-8").splitlines()


def index_of(lines: list[str], seq: int) -> int:
    return next(i for i, line in enumerate(lines) if not line.startswith('{"checkpoint"') and i
                and json.loads(line)["seq"] == seq)


def jsonl_edit(lines):
    i = index_of(lines, 17)
    lines[i] = lines[i].replace('"actor":"bob"', '"actor":"mallory"')


def jsonl_delete(lines):
    del lines[index_of(lines, 17)]


def jsonl_insert(lines):
    i = index_of(lines, 17)
    forged = json.loads(lines[i])
    forged["detail"]["code"] = "print('nothing')"
    lines.insert(i + 1, json.dumps(forged, ensure_ascii=False))


def jsonl_reorder(lines):
    i, j = index_of(lines, 17), index_of(lines, 18)
    lines[i], lines[j] = lines[j], lines[i]


def jsonl_truncate(lines):
    del lines[index_of(lines, 36):]


def jsonl_forge_checkpoint(lines):
    i = next(i for i, line in enumerate(lines) if line.startswith('{"checkpoint"') and '"tree_size": 20' in line)
    cp = json.loads(lines[i])
    cp["checkpoint"]["root_hash"] = "ab" * 32
    lines[i] = json.dumps(cp)


def jsonl_other_key(lines):
    i = next(i for i, line in enumerate(lines) if line.startswith('{"checkpoint"') and '"tree_size": 45' in line)
    cp = checkpoints.Checkpoint.from_json(json.loads(lines[i])["checkpoint"])
    lines[i] = json.dumps({"checkpoint": other_key_checkpoint(cp).to_json()})


EXPORT_TAMPERING = {
    "edit": (jsonl_edit, 17, "record 17: edited"),
    "delete": (jsonl_delete, 17, "record 17: missing: after record 16 comes record 18"),
    "insert": (jsonl_insert, 17, "record 17: appears twice"),
    "reorder": (jsonl_reorder, 17, "record 17: missing: after record 16 comes record 18"),
    "truncate": (jsonl_truncate, 36, "record 36: missing: the export's header says it ends at record 45"),
    "forged checkpoint": (jsonl_forge_checkpoint, None, "checkpoint at tree size 20 (export) is its signature does not verify"),
    "checkpoint signed with another key": (jsonl_other_key, None, "checkpoint at tree size 45 (export) is signed with"
                                                                  " another key"),
}


@pytest.mark.parametrize("kind", list(EXPORT_TAMPERING))
@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_tampering_in_an_export_is_found_and_named(sealed_log, tmp_path, kind):
    lines = export_lines(sealed_log, tmp_path)
    assert len(lines) == 1 + RECORDS + 5
    tamper, first_bad, words = EXPORT_TAMPERING[kind]
    tamper(lines)
    path = tmp_path / "tampered.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    report = verify_export(path, sealed_log.public_key())
    assert not report.ok
    assert report.first_bad_record == first_bad, report.problems
    assert any(words in str(p) for p in report.problems), [str(p) for p in report.problems]


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_an_export_reverifies_whole_or_in_part_without_the_database(sealed_log, tmp_path):
    lines = export_lines(sealed_log, tmp_path)
    path = tmp_path / "export.jsonl"
    assert verify_export(path, sealed_log.public_key()).ok
    # The log grows after the export; the export still verifies against the grown log's checkpoints.
    sealed_log.start()
    sealed_log.client().append(**execution(99))
    sealed_log.stop()
    copy = checkpoints.read_copy(sealed_log.copy_path)[0]
    report = verify_export(path, sealed_log.public_key(), copy)
    assert report.ok and report.notes == ["1 given checkpoint(s) are newer than the export, which ends at record 45"]
    header = json.loads(lines[0])["audit_export"]
    assert header == {"log": "enclave-audit-v1", "first_seq": 1, "last_seq": RECORDS, "complete": True,
                      "previous_chain_hash": GENESIS.hex()}
    # Records 12..31: checked from the chain hash before 12 up to the checkpoints at 20 and 30.
    since = json.loads(lines[index_of(lines, 12)])["time"]
    until = json.loads(lines[index_of(lines, 32)])["time"]
    part = tmp_path / "part.jsonl"
    with part.open("w", encoding="utf-8") as out:
        assert sealed_log.reader().export(out, since=since, until=until) == 20
    report = verify_export(part, sealed_log.public_key(), checkpoints.read_copy(sealed_log.copy_path)[0])
    assert report.ok and report.first_seq == 12 and report.records == 20, report.problems
    # An edit inside the part is caught by the checkpoint at 20, though the part holds no record 1.
    tampered = part.read_text(encoding="utf-8").splitlines()
    previous = bytes.fromhex(json.loads(tampered[0])["audit_export"]["previous_chain_hash"])
    for i, line in enumerate(tampered[1:], 1):
        if line.startswith('{"checkpoint"'):
            continue
        record = json.loads(line)
        record.pop("chain_hash")
        if record["seq"] == 15:
            record["actor"] = "mallory"
        previous = chained(previous, record)
        tampered[i] = json.dumps({**record, "chain_hash": previous.hex()}, ensure_ascii=False)
    part.write_text("\n".join(tampered) + "\n", encoding="utf-8")
    report = verify_export(part, sealed_log.public_key())
    assert report.first_bad_record == 12 and "records 12..20 do not match the checkpoint" in str(report.problems[0])
