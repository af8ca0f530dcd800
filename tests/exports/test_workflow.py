"""The transition table, its generated page, the migrations, signatures and release watermarks."""

from __future__ import annotations

import io
from types import SimpleNamespace

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from PIL import Image, PngImagePlugin
from pypdf import PdfReader, PdfWriter
from sqlalchemy import inspect

from enclave.exports import docs, release, signing, workflow
from enclave.exports.models import MIGRATIONS, Base, make_engine, upgrade
from enclave.migrate import alembic_config


def test_transition_table_is_consistent():
    assert workflow.TRANSITIONS, "the table is empty"
    reachable, todo = {workflow.SUBMITTED}, [workflow.SUBMITTED]
    while todo:
        for to, _ in workflow.allowed_from(todo.pop()):
            if to not in reachable:
                reachable.add(to)
                todo.append(to)
    assert reachable == set(workflow.STATES), "every state is reachable from submitted"
    for state in workflow.FINAL:
        assert not workflow.allowed_from(state), f"{state} is final"
    for (frm, to, actor), t in workflow.TRANSITIONS.items():
        assert frm in workflow.STATES and to in workflow.STATES
        assert actor == t.actor in (workflow.REQUESTER, workflow.REVIEWER, workflow.ADMIN, workflow.SYSTEM)
        # Every decision a person takes that refuses, returns or approves carries a written reason;
        # those the votes take are explained by the rule that took them.
        if t.action in ("approve", "reject", "return", "revoke") and actor != workflow.SYSTEM:
            assert t.reason_required
        if actor == workflow.SYSTEM and t.guard is not None:
            assert t.description.startswith((workflow.BY_VOTE, "Taken by the first vote"))


@pytest.mark.parametrize("votes, required, decision", [
    ([], 2, workflow.FILE_PENDING),
    (["approve"], 2, workflow.FILE_PENDING),
    (["approve", "approve"], 2, workflow.FILE_APPROVED),
    (["approve"], 1, workflow.FILE_APPROVED),
    (["reject", "reject"], 2, workflow.FILE_REJECTED),
    (["approve", "reject"], 2, workflow.FILE_CONFLICTED),
    (["approve", "request_changes"], 2, workflow.FILE_CHANGES),
    (["request_changes"], 2, workflow.FILE_PENDING),
])
def test_file_decisions(votes, required, decision):
    assert workflow.file_decision(votes, required) == decision


def test_committed_states_page_matches_the_table():
    assert docs.DOC_PATH.read_text() == docs.render(), "run 'enclave exports states-doc'"
    for (frm, to, actor), t in workflow.TRANSITIONS.items():
        assert f"| `{frm}` | `{to}` | {actor} | {t.action} |" in docs.render()


class Request:
    """Just what the guards read of an export request: its state, policy and current files' votes."""

    def __init__(self, state: str, required: int, *files: list[str]) -> None:
        self.state, self.approvals_required = state, required
        self.files = [SimpleNamespace(name=f"f{i}.csv", votes=[SimpleNamespace(decision=v, reason=f"r{i}")
                                                                for v in votes])
                      for i, votes in enumerate(files)]

    def current_files(self):
        return self.files


@pytest.mark.parametrize("files, step", [
    ([["approve"], []], None),  # a file has no votes yet
    ([["approve", "approve"], ["approve"]], None),  # one still lacks a vote
    ([["approve", "approve"], ["reject", "reject"]], workflow.APPROVED),  # rejected files are not released
    ([["reject", "reject"], ["reject", "reject"]], workflow.REJECTED),
    ([["approve", "approve"], ["approve", "request_changes"]], workflow.RETURNED),
    ([["approve", "reject"], ["approve", "request_changes"]], None),  # a conflict: a reviewer decides
    ([["approve", "reject"], ["approve", "approve"]], None),
])
def test_the_votes_take_exactly_one_step_or_leave_it_to_a_reviewer(files, step):
    req = Request(workflow.IN_REVIEW, 2, *files)
    taken = workflow.automatic_step(req)
    assert (taken[0] if taken else None) == step
    # Every step the system could take out of the state: at most one holds at a time.
    holding = [to for to, t in workflow.allowed_from(req.state) if t.actor == workflow.SYSTEM
               and workflow.problem(req, t) is None]
    assert len(holding) <= 1
    # A reviewer decides exactly when the votes are all in and one file's conflict.
    reviewer_steps = [to for to, t in workflow.allowed_from(req.state) if t.actor == workflow.REVIEWER
                      and workflow.problem(req, t) is None]
    all_in = all(len(f) == 2 for f in files)
    conflict = any(sorted(f) == ["approve", "reject"] for f in files)
    assert reviewer_steps == ([workflow.REJECTED, workflow.RETURNED] if all_in and conflict else [])


def test_a_returned_request_is_resubmitted_only_with_new_versions_of_what_was_questioned():
    resubmit = workflow.by_hand(workflow.RETURNED, workflow.SUBMITTED)
    changes = workflow.problem(Request(workflow.RETURNED, 2, ["approve"] * 2, ["request_changes"] * 2), resubmit)
    assert (changes.code, changes.params["file"]) == ("export.step.new_version_needed", "'f1.csv'")
    assert str(changes) == "cannot resubmit: file 'f1.csv' is changes requested: send a new version of it first"
    conflicted = workflow.problem(Request(workflow.RETURNED, 2, ["approve", "reject"], []), resubmit)
    assert (conflicted.code, conflicted.params["file"]) == ("export.step.new_version_needed", "'f0.csv'")
    # A new version has no votes: the file is pending again.
    assert workflow.problem(Request(workflow.RETURNED, 2, ["approve"] * 2, []), resubmit) is None
    changes = Request(workflow.IN_REVIEW, 2, ["approve"] * 2, ["request_changes", "approve"])
    assert workflow.changes_requested(changes) == "f1.csv: r1"


def test_migrations_build_the_models_schema_and_downgrade(tmp_path):
    url = f"sqlite:///{tmp_path / 'exports.sqlite'}"
    upgrade(url)
    engine = make_engine(url)
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
    command.downgrade(alembic_config(url, MIGRATIONS), "base")
    assert set(inspect(make_engine(url)).get_table_names()) == {"alembic_version"}


def test_signature_detects_tampering_and_foreign_keys():
    key = Ed25519PrivateKey.generate()
    manifest = {"request_id": "r1", "file": {"sha256": "ab" * 32}, "approvers": [{"reviewer": "rita"}]}
    sig = signing.sign(key, manifest)
    assert signing.verify(key.public_key(), manifest, sig)
    forged = {**manifest, "approvers": [{"reviewer": "mallory"}]}
    assert not signing.verify(key.public_key(), forged, sig)
    assert not signing.verify(Ed25519PrivateKey.generate().public_key(), manifest, sig)
    assert not signing.verify(key.public_key(), manifest, "not base64!")


def test_png_release_strips_metadata_and_carries_watermark():
    info = PngImagePlugin.PngInfo()
    info.add_text("Author", "zhang san 13812345678")
    out = io.BytesIO()
    Image.new("RGB", (4, 4), "blue").save(out, "PNG", pnginfo=info)
    released, marked = release.prepare(out.getvalue(), "png", "f" * 32)
    assert marked
    assert Image.open(io.BytesIO(released)).info == {release.WATERMARK_KEY: "f" * 32}
    assert release.read_watermark(released) == "f" * 32


def test_pdf_release_replaces_document_information():
    w = PdfWriter()
    w.add_blank_page(72, 72)
    w.add_metadata({"/Author": "zhang san"})
    out = io.BytesIO()
    w.write(out)
    released, marked = release.prepare(out.getvalue(), "pdf", "e" * 32)
    assert marked
    assert dict(PdfReader(io.BytesIO(released)).metadata) == {release.PDF_KEY: "e" * 32}
    assert release.read_watermark(released) == "e" * 32


def test_text_is_released_unchanged():
    assert release.prepare(b"region,count\nnorth,20\n", "text", "d" * 32) == (b"region,count\nnorth,20\n", False)
    assert release.read_watermark(b"region,count\n") is None


def test_jpeg_release_drops_exif_and_carries_watermark():
    exif = Image.Exif()
    exif[0x013B] = "zhang san"  # Artist
    out = io.BytesIO()
    Image.new("RGB", (16, 16), "red").save(out, "JPEG", exif=exif.tobytes())
    assert Image.open(io.BytesIO(out.getvalue())).getexif()
    released, marked = release.prepare(out.getvalue(), "jpeg", "c" * 32)
    assert marked and not Image.open(io.BytesIO(released)).getexif()
    assert release.read_watermark(released) == "c" * 32
