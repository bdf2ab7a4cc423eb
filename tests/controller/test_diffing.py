"""Field-level diffs (pure) and token lifetimes."""

from __future__ import annotations

from datetime import timedelta

import pytest

from stockade.controller.auth import parse_ttl
from stockade.controller.diffing import FieldChange, diff_documents, field_changes
from stockade.errors import ValidationError
from stockade.model.kinds import ObjectKey


def test_field_changes_name_paths_and_ops_in_document_order() -> None:
    old = {"spec": {"order": 10, "ingress": [{"action": "allow", "ports": [{"port": 80}]}], "mode": "audit"}}
    new = {"spec": {"order": 20, "ingress": [{"action": "allow", "ports": [{"port": 80}, {"port": 443}]},
                                             {"action": "deny"}]}}
    assert field_changes(old, new) == [
        FieldChange("spec.order", "change", 10, 20),
        FieldChange("spec.ingress[0].ports[1]", "add", new={"port": 443}),
        FieldChange("spec.ingress[1]", "add", new={"action": "deny"}),
        FieldChange("spec.mode", "remove", old="audit"),
    ]
    assert field_changes(new, new) == []


def test_diff_documents_ignores_server_status_and_shows_whole_new_objects() -> None:
    key = ObjectKey("Workload", "shop", "web-1")
    old = {"metadata": {"name": "web-1"}, "spec": {"host": "hv1"}, "status": {"ips": ["198.18.64.1"]}}
    new = {"metadata": {"name": "web-1"}, "spec": {"host": "hv1"}}
    [same] = diff_documents([(key, "unchanged", old, new)])
    assert same.fields == ()
    [created] = diff_documents([(key, "created", None, new)])
    assert created.to_dict()["fields"] == [{"path": "", "op": "add", "new": new}]


@pytest.mark.parametrize("text,seconds", [("90s", 90), ("30m", 1800), ("12h", 43200), ("7d", 604800),
                                          ("2w", 1209600)])
def test_ttl_units(text: str, seconds: int) -> None:
    assert parse_ttl(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "0s", "10", "5y", "-1h", "1.5h", "99999w"])
def test_bad_ttl_is_a_validation_error_naming_the_field(text: str) -> None:
    with pytest.raises(ValidationError) as e:
        parse_ttl(text)
    assert e.value.problems[0].field == "ttl"
