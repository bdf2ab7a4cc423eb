"""`stockade test`: expectation files, proposed states, evaluation with trace, and the real CLI.

The CLI tests run `python -m stockade test` as a subprocess, offline (no root,
no lab) or against a controller served from a thread of this process.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from stockade.client import ControllerClient
from stockade.controller.auth import create_token_file
from stockade.controller.config import ControllerConfig
from stockade.controller.main import RunningController, start_in_thread
from stockade.controller.wiring import open_service
from stockade.errors import PolicyTestFailed, ValidationError
from stockade.model.validation import ValidationSettings
from stockade.policytest import evaluate, parse_expectations, proposed_state
from stockade.policytest.expectations import Expectation

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "three-tier"
FLOWS = REPO / "examples" / "three-tier.flows.yaml"


def example_documents() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in sorted(EXAMPLE.glob("*.yaml")):
        docs.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
    return docs


def problems_of(exc: pytest.ExceptionInfo[ValidationError]) -> set[tuple[str, str]]:
    return {(p.object_ref, p.field) for p in exc.value.problems}


# ------------------------------------------------------------ expectations

def test_example_flows_file_is_an_expectation_file() -> None:
    entries = parse_expectations(FLOWS.read_text(), "flows.yaml")
    assert len(entries) == 13
    first = entries[0]
    assert (first.src, first.dst, first.protocol, first.port, first.family, first.expect) == \
        (("shop", "lb-1"), ("shop", "web-1"), "tcp", 8080, 4, "allow")
    ping = next(e for e in entries if e.protocol == "icmp")
    assert ping.port is None and ping.icmp_type is None
    assert [e.index for e in entries] == list(range(1, 14))


def test_multi_document_file_with_lists_and_single_entries() -> None:
    text = """
- {from: a/x, to: a/y, port: 80, protocol: TCP, expect: allow}
---
{name: ping6, from: a/x, to: a/y, protocol: icmp, type: 128, code: 0, family: 6, expect: reject}
"""
    one, two = parse_expectations(text, "t.yaml")
    assert one.protocol == "tcp"  # policies write TCP; either case is accepted
    assert (two.index, two.name, two.family, two.icmp_type, two.icmp_code) == (2, "ping6", 6, 128, 0)
    assert two.ref == "t.yaml entry 2 (ping6)"
    assert two.describe_flow() == "icmp type 128 code 0 IPv6"
    assert two.flow.icmp_type == 128


def test_every_bad_field_of_every_entry_is_named() -> None:
    text = """
- {from: shop/web-1, to: db-1, port: 70000, protocol: tcp, expect: maybe, colour: red}
- {name: p, from: shop/web-1, to: shop/db-1, protocol: icmpv6, expect: deny}
- {from: shop/web-1, to: shop/db-1, protocol: icmp, port: 3, code: 1, expect: deny, family: true}
- {from: shop/web-1, protocol: udp, expect: deny, type: 3}
- 7
"""
    with pytest.raises(ValidationError) as exc:
        parse_expectations(text, "t.yaml")
    assert problems_of(exc) == {
        ("t.yaml entry 1", "colour"), ("t.yaml entry 1", "to"), ("t.yaml entry 1", "expect"),
        ("t.yaml entry 1", "port"),
        ("t.yaml entry 2 (p)", "protocol"),
        ("t.yaml entry 3", "family"), ("t.yaml entry 3", "port"), ("t.yaml entry 3", "code"),
        ("t.yaml entry 4", "to"), ("t.yaml entry 4", "port"), ("t.yaml entry 4", "type"),
        ("t.yaml entry 5", ""),
    }
    assert "family: 6" in str(exc.value)  # the ICMPv6 hint


@pytest.mark.parametrize("text", ["", "# nothing\n", "[]\n"])
def test_a_file_without_expectations_is_refused(text: str) -> None:
    with pytest.raises(ValidationError, match="contains no expectations"):
        parse_expectations(text, "t.yaml")


def test_a_file_that_is_not_yaml_is_refused() -> None:
    with pytest.raises(ValidationError, match="t.yaml: not valid YAML"):
        parse_expectations("- {from: [", "t.yaml")


# ---------------------------------------------------------------- proposal

def test_proposal_assigns_the_addresses_the_controller_would(tmp_path: Path) -> None:
    docs = example_documents()
    offline = proposed_state(docs)
    service = open_service(ControllerConfig(db_path=tmp_path / "db.sqlite"))
    try:
        service.apply(docs, "test", "fresh store")
        stored = service.desired_state()
    finally:
        service.close()
    addresses = {k: offline.workload_ips(w) for k, w in offline.workloads.items()}
    assert addresses == {k: stored.workload_ips(w) for k, w in stored.workloads.items()}
    assert addresses[("shop", "web-2")] == ["198.18.64.1", "2001:db8:64::1"]  # first without spec.ips
    assert addresses[("shop", "web-1")] == ["198.18.10.11", "2001:db8:10::11"]  # spec.ips kept


def test_proposal_refuses_bad_shape_naming_object_and_field() -> None:
    docs = example_documents()
    docs.append({"apiVersion": "stockade.io/v1", "kind": "Policy", "metadata": {"name": "x", "namespace": "shop"},
                 "spec": {"appliesTo": {"group": "web"}, "ingress": [{"action": "allow", "colour": "red"}]}})
    with pytest.raises(ValidationError) as exc:
        proposed_state(docs)
    assert problems_of(exc) == {(f"Policy shop/x (document {len(docs)})", "spec.ingress[0].colour")}


def test_proposal_refuses_dangling_references_naming_object_and_field() -> None:
    docs = example_documents()
    docs.append({"apiVersion": "stockade.io/v1", "kind": "Policy", "metadata": {"name": "x", "namespace": "shop"},
                 "spec": {"appliesTo": {"group": "nosuch"}, "tier": "nosuch"}})
    with pytest.raises(ValidationError) as exc:
        proposed_state(docs)
    assert problems_of(exc) == {("Policy shop/x", "spec.appliesTo.group"), ("Policy shop/x", "spec.tier")}


def test_proposal_refuses_an_object_given_twice() -> None:
    docs = example_documents()
    docs.append(docs[0])
    with pytest.raises(ValidationError, match="appears twice"):
        proposed_state(docs)


# -------------------------------------------------------------- evaluation

def _entry(index: int, src: str, dst: str, expect: str, port: int | None = 80, protocol: str = "tcp",
           family: int = 4) -> Expectation:
    s, d = tuple(src.split("/")), tuple(dst.split("/"))
    return Expectation(index, s, d, protocol, expect, port, family)  # type: ignore[arg-type]


def test_evaluation_reports_verdict_and_deciding_rule_of_each_flow() -> None:
    state = proposed_state(example_documents())
    report = evaluate(state, [
        _entry(1, "shop/lb-1", "shop/web-2", "allow", 8080),
        _entry(2, "shop/web-1", "shop/db-1", "allow", 5432),   # wrong: web may not skip the app tier
        _entry(3, "shop/lb-1", "shop/web-1", "deny", 8080),    # wrong: lb reaches web
    ])
    assert (report.passed, report.failed, report.summary()) == (1, 2, "1 passed, 2 failed")
    ok, skip, lb = report.outcomes
    assert ok.passed and ok.deciding_rule == "shop/web/http-from-lb" and ok.deciding_side == "ingress"
    assert (skip.got, skip.deciding_rule, skip.deciding_side) == ("deny", "shop/default-deny/egress", "egress")
    assert report.misses == (skip, lb)
    as_json = report.to_dict()
    assert (as_json["passed"], as_json["failed"]) == (1, 2)
    assert as_json["results"][1]["from"] == "shop/web-1" and as_json["results"][1]["got"] == "deny"
    assert as_json["results"][1]["trace"]["egress"]["host"] == "hv1"


def test_evaluation_sees_tiers_reject_and_global_policy() -> None:
    docs = example_documents() + [{
        "apiVersion": "stockade.io/v1", "kind": "GlobalPolicy", "metadata": {"name": "no-db-from-lb"},
        "spec": {"tier": "platform", "appliesTo": {"selector": {"matchLabels": {"tier": "lb"}}},
                 "egress": [{"id": "reject-web", "action": "reject", "to": [{"group": "shop/web"}]}]},
    }]
    report = evaluate(proposed_state(docs), [_entry(1, "shop/lb-1", "shop/web-2", "reject", 8080)])
    assert report.failed == 0
    assert report.outcomes[0].deciding_rule == "no-db-from-lb/reject-web"


def test_evaluation_takes_kubernetes_network_policies_in_a_proposal() -> None:
    docs = [
        {"apiVersion": "stockade.io/v1", "kind": "Namespace", "metadata": {"name": "k8s"},
         "spec": {"defaultAction": "allowUntilSelected"}},
        *({"apiVersion": "stockade.io/v1", "kind": "Workload",
           "metadata": {"name": n, "namespace": "k8s", "labels": {"app": n}},
           "spec": {"host": "hv1", "ports": [{"name": "web", "port": 8081}]}} for n in ("a", "b", "c")),
        {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "b", "namespace": "k8s"},
         "spec": {"podSelector": {"matchLabels": {"app": "b"}},
                  "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "a"}}}], "ports": [{"port": "web"}]}]}},
    ]
    report = evaluate(proposed_state(docs), [
        _entry(1, "k8s/a", "k8s/b", "allow", 8081),   # the named port, from the selected pod
        _entry(2, "k8s/c", "k8s/b", "deny", 8081),    # b is isolated for ingress now
        _entry(3, "k8s/b", "k8s/c", "allow", 9999),   # c is selected by nothing: open
    ])
    assert report.failed == 0, [o.to_dict() for o in report.misses]
    assert [o.deciding_rule for o in report.outcomes] == \
        ["k8s/b/ingress-0", "k8s/default-deny/ingress", "k8s/default-allow/ingress"]


def test_evaluation_refuses_unknown_workloads_and_missing_families() -> None:
    docs = [d for d in example_documents() if d["metadata"]["name"] != "lb-1"]
    web1 = next(d for d in docs if d["metadata"]["name"] == "web-1")
    web1["spec"]["ips"] = ["198.18.10.11"]  # IPv4 only
    with pytest.raises(ValidationError) as exc:
        evaluate(proposed_state(docs), [_entry(1, "shop/lb-1", "shop/web-2", "allow"),
                                        _entry(2, "shop/web-2", "shop/web-1", "deny", family=6)])
    assert problems_of(exc) == {("entry 1", "from"), ("entry 2", "family")}


def test_policy_test_failed_has_its_own_exit_code() -> None:
    assert PolicyTestFailed(11, 2).exit_code == 12
    assert PolicyTestFailed(11, 2).message == "2 of 13 expectations failed"


# --------------------------------------------------------------------- CLI

def stockade(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    # No config file and no controller variables: offline runs must need neither.
    base = {k: v for k, v in os.environ.items() if not k.startswith("STOCKADE_")}
    base["STOCKADE_CONFIG"] = "/nonexistent/stockade-config.json"
    return subprocess.run([sys.executable, "-m", "stockade", "test", *args], capture_output=True, text=True,
                          timeout=60, cwd=REPO, env={**base, **(env or {})})


def write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def test_cli_all_expectations_hold_exits_0() -> None:
    result = stockade("-f", str(FLOWS), "--objects", str(EXAMPLE))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "13 passed, 0 failed"


def test_cli_miss_exits_12_with_a_table_of_the_flow_and_deciding_rule(tmp_path: Path) -> None:
    tests = write(tmp_path / "t.yaml", """
- {name: web-to-db, from: shop/web-1, to: shop/db-1, port: 5432, protocol: tcp, expect: allow}
- {from: shop/app-1, to: shop/db-1, port: 5432, protocol: tcp, expect: allow}
""")
    result = stockade("-f", tests, "--objects", str(EXAMPLE))
    assert result.returncode == 12, result.stderr
    row = next(line for line in result.stdout.splitlines() if "web-to-db" in line)
    for cell in ("shop/web-1", "shop/db-1", "tcp/5432 IPv4", "allow", "deny", "shop/default-deny/egress"):
        assert cell in row
    assert "shop/app-1" not in result.stdout  # only misses are listed
    assert result.stdout.strip().endswith("1 passed, 1 failed")
    assert "1 of 2 expectations failed" in result.stderr


def test_cli_json_output(tmp_path: Path) -> None:
    tests = write(tmp_path / "t.yaml", "- {from: shop/lb-1, to: shop/web-2, port: 8080, protocol: tcp, expect: deny}\n")
    result = stockade("-f", tests, "--objects", str(EXAMPLE), "-o", "json")
    assert result.returncode == 12
    data = json.loads(result.stdout)
    assert (data["passed"], data["failed"]) == (0, 1)
    assert data["results"][0]["deciding_rule"] == "shop/web/http-from-lb"
    assert data["results"][0]["got"] == "allow" and data["results"][0]["expect"] == "deny"


def test_cli_takes_object_files_as_a_glob_would_give_them() -> None:
    files = [str(p) for p in sorted(EXAMPLE.glob("*.yaml"))]
    assert stockade("-f", str(FLOWS), "--objects", *files).returncode == 0
    result = stockade("-f", str(FLOWS), *files)
    assert result.returncode == 2 and "--objects" in result.stderr


def test_cli_refuses_a_bad_expectation_naming_entry_and_field(tmp_path: Path) -> None:
    tests = write(tmp_path / "t.yaml", """
- {from: shop/lb-1, to: shop/web-2, port: 8080, protocol: tcp, expect: allow}
- {name: db, from: shop/web-1, to: shop/db-1, port: 5432, protocol: tcp, expect: blocked}
""")
    result = stockade("-f", tests, "--objects", str(EXAMPLE))
    assert result.returncode == 2
    assert f"{tests} entry 2 (db): expect: 'blocked' is not one of allow, deny, reject" in result.stderr
    assert "passed" not in result.stdout


def test_cli_refuses_a_bad_proposed_object_naming_object_and_field(tmp_path: Path) -> None:
    proposal = tmp_path / "proposal"
    shutil.copytree(EXAMPLE, proposal)
    write(proposal / "40-new.yaml", """
apiVersion: stockade.io/v1
kind: Policy
metadata: {name: cache, namespace: shop}
spec:
  appliesTo: {group: cache}
""")
    result = stockade("-f", str(FLOWS), "--objects", str(proposal))
    assert result.returncode == 2
    assert "Policy shop/cache: spec.appliesTo.group: group shop/cache does not exist" in result.stderr


# ------------------------------------------------------- the stored revision

@pytest.fixture
def controller(tmp_path: Path) -> Iterator[tuple[RunningController, str]]:
    tokens = create_token_file(tmp_path / "tokens.json", [{"name": "alice", "role": "admin"}])
    config = ControllerConfig(db_path=tmp_path / "db.sqlite", tokens_file=tmp_path / "tokens.json",
                              validation=ValidationSettings(known_hosts=frozenset({"hv1", "hv2"})))
    sock_dir = Path(tempfile.mkdtemp(prefix="stk-", dir="/tmp"))  # unix socket paths are short
    running = start_in_thread(config, unix_socket=sock_dir / "ctl.sock")
    try:
        yield running, tokens["alice"]
    finally:
        running.stop()
        shutil.rmtree(sock_dir, ignore_errors=True)


def test_cli_without_objects_checks_the_stored_revision(controller: tuple[RunningController, str],
                                                        tmp_path: Path) -> None:
    running, token = controller
    env = {"STOCKADE_CONTROLLER": running.url, "STOCKADE_TOKEN": token}
    with ControllerClient(running.url, token) as client:
        client.apply(example_documents(), "example")
    stored = stockade("-f", str(FLOWS), "-o", "json", env=env)
    assert stored.returncode == 0, stored.stderr
    offline = stockade("-f", str(FLOWS), "--objects", str(EXAMPLE), "-o", "json")
    # Same verdicts, same rules, same addresses: offline is what the controller would store.
    assert json.loads(stored.stdout)["results"] == json.loads(offline.stdout)["results"]

    with ControllerClient(running.url, token) as client:
        client.delete([{"kind": "Policy", "namespace": "shop", "name": "db"}], "close the database")
    closed = stockade("-f", str(FLOWS), env=env)
    assert closed.returncode == 12
    assert "shop/default-deny/ingress" in closed.stdout and "shop/app-1" in closed.stdout


def test_proposal_refuses_a_policy_applying_to_another_namespace() -> None:
    docs = example_documents()
    docs.append({"apiVersion": "stockade.io/v1", "kind": "Policy", "metadata": {"name": "x", "namespace": "ops"},
                 "spec": {"appliesTo": {"group": "shop/web"}, "ingress": [{"action": "allow"}]}})
    with pytest.raises(ValidationError) as exc:
        proposed_state(docs)
    assert problems_of(exc) == {("Policy ops/x", "spec.appliesTo.group")}


def test_proposal_refuses_two_workloads_on_one_interface() -> None:
    docs = example_documents()
    for name in ("vm-1", "vm-2"):
        docs.append({"apiVersion": "stockade.io/v1", "kind": "Workload", "metadata": {"name": name, "namespace": "shop"},
                     "spec": {"host": "hv1", "interface": "tap3"}})
    with pytest.raises(ValidationError) as exc:
        proposed_state(docs)
    assert problems_of(exc) == {("Workload shop/vm-1", "spec.interface"), ("Workload shop/vm-2", "spec.interface")}
