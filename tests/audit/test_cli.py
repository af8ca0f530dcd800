"""``enclave audit query|export|verify --jsonl|prove|actions-doc``, run as the click commands they are.

The log's service is stopped here, as with no hub running: ``query`` and ``export`` start it for the
while (``test_query_socket`` runs them against a running one). (``test_tamper`` also runs ``enclave
audit verify`` as a separate process.)
"""

from __future__ import annotations

import csv
import io
import json
import random

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from enclave.audit import checkpoints, query_client
from enclave.audit.verify import check_consistency, check_inclusion
from enclave.cli import main

from .conftest import AuditHome, execution


@pytest.fixture(scope="module")
def log(tmp_path_factory):
    home = AuditHome(tmp_path_factory.mktemp("audit-cli") / "home", checkpoint_every_records=50)
    home.start()
    client = home.client()
    for i in range(120):
        client.append(**execution(i, user=("alice", "王芳")[i % 2], workspace=("demo", "人口普查")[i % 3 == 0]))
    client.append("exports", "carol", "export.vote", workspace="demo", detail={
        "request_id": "r1", "file": "表1.csv", "decision": "approve", "reason": "单元格计数均不小于10"})
    assert home.stop() == 0
    yield home
    home.cleanup()


def enclave(home: AuditHome, *args: str) -> tuple[int, str, str]:
    runner = CliRunner()
    result = runner.invoke(main, ["audit", *args], env=home.env(), catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def test_query_as_jsonl_csv_and_table(log):
    code, out, _ = enclave(log, "query", "--user", "王芳", "--workspace", "人口普查", "--format", "jsonl")
    assert code == 0
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["seq"] for r in records] == [i + 1 for i in range(120) if i % 2 and i % 3 == 0]
    assert all(r["actor"] == "王芳" and r["workspace"] == "人口普查" for r in records)

    code, out, _ = enclave(log, "query", "--action", "export.*", "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and len(rows) == 1 and rows[0]["actor"] == "carol"
    assert json.loads(rows[0]["detail"])["reason"] == "单元格计数均不小于10"

    code, out, _ = enclave(log, "query", "--workspace", "人口普查", "--limit", "3")
    lines = out.splitlines()
    assert code == 0 and len(lines) == 4 and lines[0].split()[:3] == ["seq", "time", "actor"]
    assert lines[1].split()[0] == "1" and "人口普查" in lines[1]

    code, _, err = enclave(log, "query", "--action", "export.sign")
    assert code == 1 and "no action matches 'export.sign'" in err
    assert not log.socket.exists() and not query_client.socket_path(log.home).exists(), \
        "the service started for the while stopped with the command"
    assert log.verify().records == 121, "reading added no record"


def test_export_then_verify_the_file(log, tmp_path):
    path = tmp_path / "audit.jsonl"
    code, _, err = enclave(log, "export", "--format", "jsonl", "--output", str(path))
    assert code == 0 and "exported 121 record(s)" in err
    code, out, _ = enclave(log, "verify", "--jsonl", str(path), "--checkpoints", str(log.copy_path))
    assert code == 0 and out.startswith(f"OK: {path}: records 1..121, 3 checkpoint(s)")
    code, out, _ = enclave(log, "export")
    assert code == 0 and out.encode() == path.read_bytes()

    lines = path.read_text(encoding="utf-8").splitlines()
    lines[30] = lines[30].replace('"x = ', '"y = ')
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    code, _, err = enclave(log, "verify", "--jsonl", str(path))
    assert code == 1 and f"the first bad record is {json.loads(lines[30])['seq']}" in err


def test_inclusion_proofs_verify_for_random_records_and_fail_for_wrong_ones(log):
    public = log.public_key()
    reader = log.reader()
    for seq in random.Random(6962).sample(range(1, 122), 15):
        proof = reader.prove(seq)
        assert proof["record"]["seq"] == seq and proof["tree_size"] == 121
        assert check_inclusion(proof, public) is None
        altered = {**proof, "record": {**proof["record"], "actor": "mallory"}}
        assert "is not in the log" in check_inclusion(altered, public)
        elsewhere = {**proof, "leaf_index": seq % 121, "record": {**proof["record"], "seq": seq % 121 + 1}}
        assert "is not in the log" in check_inclusion(elsewhere, public)
        shortened = {**proof, "inclusion_proof": proof["inclusion_proof"][:-1]}
        assert check_inclusion(shortened, public) is not None
    other = Ed25519PrivateKey.generate().public_key()
    assert "signed with another key" in check_inclusion(reader.prove(7), other)


def test_the_newest_checkpoint_is_consistent_with_each_older_one(log):
    public = log.public_key()
    reader = log.reader()
    for old in (50, 100, 121):
        proof = reader.prove_consistency(old)
        assert proof["checkpoint"]["tree_size"] == 121
        assert check_consistency(proof, public) is None
    proof = reader.prove_consistency(50)
    rewritten = {**proof, "old_checkpoint": {**proof["old_checkpoint"], "root_hash": "ab" * 32}}
    assert "its signature does not verify" in check_consistency(rewritten, public)
    other = Ed25519PrivateKey.generate()
    forged_old = checkpoints.sign(other, 50, proof["old_checkpoint"]["time"], bytes(32), bytes(32))
    assert "signed with another key" in check_consistency({**proof, "old_checkpoint": forged_old.to_json()}, public)
    assert "does not extend" in check_consistency({**proof, "consistency_proof": proof["consistency_proof"][1:]},
                                                  public)


def test_prove_prints_a_proof_that_stands_on_its_own(log, tmp_path):
    code, out, err = enclave(log, "prove", "121")
    assert code == 0 and "record 121 is in the log" in err and "proof verified" in err
    proof = json.loads(out)
    assert proof["record"]["detail"]["reason"] == "单元格计数均不小于10"
    assert check_inclusion(proof, log.public_key()) is None
    other = tmp_path / "other.pub"
    other.write_bytes(Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    code, _, err = enclave(log, "prove", "5", "--public-key", str(other))
    assert code == 1 and "signed with another key" in err
    code, _, err = enclave(log, "prove", "500")
    assert code == 1 and "record 500 is not covered by the newest checkpoint" in err


def test_the_docs_page_check(log):
    code, out, _ = enclave(log, "actions-doc", "--check")
    assert code == 0 and out.strip().endswith("audit.md is up to date")


def test_reading_a_home_without_a_log_says_so(tmp_path):
    empty = AuditHome(tmp_path / "empty")
    for command in (["verify"], ["query"], ["export", "-o", str(tmp_path / "audit.jsonl")]):
        code, _, err = enclave(empty, *command)
        assert code == 1 and "no audit log at" in err and "has not run" in err, command
    assert not empty.settings.audit_dir.exists() and not (tmp_path / "audit.jsonl").exists(), "and made none"
