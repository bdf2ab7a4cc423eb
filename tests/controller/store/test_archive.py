"""The backup file: what it holds, and every way a damaged one is refused before anything is written."""

from __future__ import annotations

import hashlib
import json
import stat
from pathlib import Path
from typing import Any

import pytest

from stockade.controller.store.archive import (RevisionRecord, StoreDump, document_of, dump_from_document,
                                               final_objects, read_backup, write_backup)
from stockade.controller.store.tokens import StoredToken
from stockade.controller.store.types import Change, Revision
from stockade.errors import ValidationError
from stockade.model.kinds import ObjectKey

A, B = ObjectKey("Group", "shop", "a"), ObjectKey("Group", "shop", "b")


def _dump() -> StoreDump:
    revisions = (
        RevisionRecord(Revision(1, "alice", "first", "2030-01-01T00:00:00.000+00:00"),
                       (Change(A, {"kind": "Group", "spec": {"n": 1}}), Change(B, {"kind": "Group"}))),
        RevisionRecord(Revision(2, "bob", "drop b", "2030-01-01T00:00:01.000+00:00"), (Change(B, None),)),
        RevisionRecord(Revision(3, "carol", "a again", "2030-01-01T00:00:02.000+00:00"),
                       (Change(A, {"kind": "Group", "spec": {"n": 3}}),)),
    )
    token = StoredToken("t1", "ab" * 32, "ci", "tenant", ("shop",), None, "2030", "alice", None, None)
    return StoreDump("id-1", 3, 1, revisions, (token,), (("cd" * 32, "2030"),),
                     ((7, {"time": "2030", "action": "apply"}),), ("id-0",), "2030-02-01", "sqlite", 1)


def test_a_backup_file_reads_back_as_the_dump_it_was_written_from(tmp_path: Path) -> None:
    path = tmp_path / "store.backup"
    write_backup(path, _dump())
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # token hashes and the audit log: not for others
    assert read_backup(path) == _dump()


def test_final_objects_replays_puts_and_deletes() -> None:
    assert final_objects(_dump().revisions) == {A: (3, {"kind": "Group", "spec": {"n": 3}})}


def _document() -> dict[str, Any]:
    return json.loads(json.dumps(document_of(_dump())))


def _resealed(doc: dict[str, Any]) -> dict[str, Any]:
    """`doc` with a checksum that matches it again: what a forger (or a buggy writer) would make."""
    return {**doc, "checksum": _checksum(doc)}


def _checksum(doc: dict[str, Any]) -> str:
    body = {k: v for k, v in doc.items() if k != "checksum"}
    return "sha256:" + hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":"),
                                                 ensure_ascii=False).encode()).hexdigest()


@pytest.mark.parametrize("edit, field, words", [
    (lambda d: d.update(revision=4), "checksum", "damaged or was edited"),
    (lambda d: d["revisions"][1]["changes"][0].__setitem__(0, "PUT"), "checksum", "damaged"),
])
def test_an_edited_backup_is_refused_by_its_checksum(edit: Any, field: str, words: str) -> None:
    doc = _document()
    edit(doc)
    with pytest.raises(ValidationError, match=words) as caught:
        dump_from_document(doc)
    assert caught.value.problems[0].field == field


@pytest.mark.parametrize("edit, field, words", [
    (lambda d: d.update(format="tarball"), "format", "not a Stockade backup"),
    (lambda d: d.update(version=2), "version", "reads version 1"),
    (lambda d: d["revisions"].pop(1), "revisions[1].number", "expected 2"),
    (lambda d: d["revisions"].pop(), "revisions", "holds 2 revisions"),
    (lambda d: d.update(compacted=9), "compacted", "not between 0 and the revision 3"),
    (lambda d: d["revisions"][0].update(changes=[]), "revisions[0].changes", "at least one change"),
    (lambda d: d["revisions"][1]["changes"][0].__setitem__(4, {"kind": "Group"}), "revisions[1].changes[0]",
     "PUT|DELETE"),
    (lambda d: d["revisions"][0].pop("author"), "revisions[0].author", "missing"),
    (lambda d: d["tokens"][0].pop("role"), "tokens/revoked/audit", "malformed"),
])
def test_a_malformed_backup_is_refused_naming_the_field(edit: Any, field: str, words: str) -> None:
    doc = _document()
    edit(doc)
    with pytest.raises(ValidationError, match=words) as caught:
        dump_from_document(_resealed(doc))
    assert caught.value.problems[0].field == field


def test_a_truncated_or_missing_file_is_refused_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "store.backup"
    write_backup(path, _dump())
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(ValidationError, match="not JSON \\(truncated\\?\\)"):
        read_backup(path)
    with pytest.raises(ValidationError, match="cannot be read"):
        read_backup(tmp_path / "absent.backup")
