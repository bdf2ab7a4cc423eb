"""Attacks on the dashboard and the API routes behind it, by a tenant of `shop` who wants to learn
about namespace `bank`, and by a caller holding no token at all. Each test is one attack over real
HTTP against a real controller (conftest: uvicorn in a thread) and fails if the attack works."""

from __future__ import annotations

import json
import logging
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from stockade.controller.main import RunningController
from tests.controller.dashboard.conftest import STATE, api, apply, browser

# What the tenant `tess` (namespaces [shop]) must never learn about bank/vault beyond its name, which
# she typed herself: its address, the host it runs on, and bank's policy name (vault-in).
BANK_SECRETS = ("198.18.10.3", "vault-in", "vault_in", "keep-shop-out")


def test_a_tenant_cannot_trace_into_another_namespace_nor_tell_its_names_apart(
        controller: RunningController, tokens: dict[str, str]) -> None:
    """The attacks: a trace into bank answered with bank/vault's address (naming the `bank/(hidden)`
    ends of flow records again), its host and its policy's kernel chain (`pol_vault_in_...`); and
    `to=bank/vault` answered 200 where `to=bank/nothing` answered 404, telling bank's workload
    names apart. Every trace naming a bank workload now gets one and the same 403."""
    apply(controller, tokens["alice"], STATE)
    answers = []
    with api(controller, tokens["tess"]) as c:
        for src, dst in (("shop/web", "bank/vault"), ("bank/vault", "shop/web"), ("shop/web", "bank/nothing"),
                         ("bank/nothing", "shop/web")):
            answer = c.get("/api/v1/trace", params={"from": src, "to": dst, "port": 443})
            assert answer.status_code == 403, answer.text
            assert not [s for s in BANK_SECRETS if s in answer.text], answer.text
            answers.append(answer.json())
        assert all(a == answers[0] for a in answers)  # exists or not: the same answer
        own = c.get("/api/v1/trace", params={"from": "shop/web", "to": "shop/db", "port": 5432})
        assert own.status_code == 200 and own.json()["decidingRule"] == "shop/db-in/from-web"
    with api(controller, tokens["alice"]) as c:  # an operator still sees everything
        t = c.get("/api/v1/trace", params={"from": "shop/web", "to": "bank/vault", "port": 443}).json()
        assert t["dst_ip"] == "198.18.10.3" and t["ingress"]["host"] == "hv2"
        assert t["ingress"]["rules"][0]["chain"].startswith("pol_vault_in_")


def test_a_login_form_with_extra_fields_is_a_failed_login_not_a_server_error(
        controller: RunningController) -> None:
    # Anyone may post the login form. One of more than four fields made parse_qs raise: a 500 with
    # a traceback in the controller's log for every such post, never counted by the rate limit.
    form = "token=guess&next=%2Fui%2Fflows&a=1&b=2&c=3"
    with browser(controller) as b:
        codes = [b.post("/ui/login", content=form,
                        headers={"content-type": "application/x-www-form-urlencoded"}).status_code
                 for _ in range(5)]
    assert codes[:3] == [400, 400, 400] and codes[-1] == 429, codes


def test_an_anonymous_login_form_of_megabytes_is_refused(controller: RunningController,
                                                         tokens: dict[str, str]) -> None:
    # /ui/login is public, so the gate lets its body through: the route read every byte of it (up
    # to the 16 MiB body limit) into memory before looking at the first 16 KiB.
    big = "token=" + tokens["alice"] + "&next=%2Fui%2Fflows&pad=" + "x" * (1024 * 1024)
    with browser(controller) as b:
        answer = b.post("/ui/login", content=big, headers={"content-type": "application/x-www-form-urlencoded"})
        assert answer.status_code == 413, answer.status_code
        assert "stockade_session" not in answer.headers.get("set-cookie", "")
        # A form of ordinary size still logs in.
        assert b.post("/ui/login", data={"token": tokens["alice"]}).status_code == 303


def _crowded_state(workloads: int) -> str:
    """STATE plus `workloads` more, half shop's and half bank's, and a shop policy naming 32 ports:
    a reach answer over it traces every peer on every port (seconds of CPU)."""
    docs = [STATE]
    for i in range(workloads):
        ns = "shop" if i % 2 == 0 else "bank"
        docs.append(f"apiVersion: stockade.io/v1\nkind: Workload\nmetadata: {{name: w{i}, namespace: {ns}, "
                    f"labels: {{tier: web}}}}\nspec: {{host: hv{1 + i % 2}, ips: [198.18.{20 + i // 200}.{1 + i % 200}]}}\n")
    ports = ", ".join(f"{{protocol: TCP, port: {p}}}" for p in range(1000, 1032))
    docs.append("apiVersion: stockade.io/v1\nkind: Policy\nmetadata: {name: wide, namespace: shop}\nspec:\n"
                "  appliesTo: {selector: {matchLabels: {tier: web}}}\n"
                f"  egress: [{{id: out, action: allow, to: [{{namespaceSelector: {{}}}}], ports: [{ports}]}}]\n")
    return "---\n".join(docs)


def test_a_tenant_cannot_run_reach_answers_side_by_side_to_starve_the_controller(
        controller: RunningController, tokens: dict[str, str]) -> None:
    # One reach answer traces every peer on every port in play: seconds of CPU at a few hundred
    # workloads, in the worker threads every synchronous route (apply, agents' flow reports) shares.
    # A tenant asking for it many times at once held them all; now only a few run at a time and
    # the rest are told to come back (429 with Retry-After) at once.
    apply(controller, tokens["alice"], _crowded_state(160))
    callers = 6
    barrier = threading.Barrier(callers)

    def ask() -> httpx.Response:
        with api(controller, tokens["tess"]) as c:
            barrier.wait()
            return c.get("/api/v1/topology/reach", params={"workload": "shop/web"}, timeout=120)

    with ThreadPoolExecutor(callers) as pool:
        answers = list(pool.map(lambda _: ask(), range(callers)))
    codes = sorted(a.status_code for a in answers)
    assert codes.count(200) >= 1 and codes.count(429) >= 1, codes
    assert set(codes) <= {200, 429}, codes
    busy = next(a for a in answers if a.status_code == 429)
    assert int(busy.headers["retry-after"]) >= 1 and "reach" in busy.json()["message"]
    # Once the others are done, the same question is answered.
    with api(controller, tokens["tess"]) as c:
        assert c.get("/api/v1/topology/reach", params={"workload": "shop/web"}, timeout=120).status_code == 200


def test_a_tenant_rollback_names_no_object_of_another_namespace(controller: RunningController,
                                                                tokens: dict[str, str]) -> None:
    # The Changes page offers a tenant the rollback (it may write). Rolling back to a revision
    # before bank's latest changes is refused, rightly; but the refusal named the first bank object
    # that differed: one rollback per revision listed bank's objects, created, changed or deleted.
    first = apply(controller, tokens["alice"], STATE)["revision"]
    apply(controller, tokens["alice"], """
apiVersion: stockade.io/v1
kind: Policy
metadata: {name: ledger-guard, namespace: bank}
spec:
  appliesTo: {selector: {matchLabels: {tier: secret}}}
  ingress: [{id: only-auditors, action: allow, from: [{selector: {matchLabels: {role: auditor}}}]}]
""")
    with api(controller, tokens["tess"]) as c:
        refused = c.post("/api/v1/rollback", json={"revision": first})
        assert refused.status_code == 403, refused.text
        message = refused.json()["message"]
        assert "ledger-guard" not in message and "bank/" not in message, message
        assert "outside" in message  # it still says why
    with api(controller, tokens["alice"]) as c:  # nothing was rolled back
        assert c.get("/api/v1/objects/policies", params={"namespace": "bank", "name": "ledger-guard"}).json()["items"]


def test_a_tenant_cannot_write_lines_of_its_own_into_the_controllers_log(
        controller: RunningController, tokens: dict[str, str], caplog: pytest.LogCaptureFixture) -> None:
    # A refusal is logged with its message, and the message quotes what was asked for. A name
    # holding a newline (the reach route takes any text) became a line of the attacker's choosing
    # in the controller's log: a forged refusal blaming another client, a fake agent error.
    forged = "WARNING stockade.controller.gate refused DELETE tokens from 10.9.9.9 (alice)"
    with caplog.at_level(logging.WARNING), api(controller, tokens["tess"]) as c:
        answer = c.get("/api/v1/topology/reach", params={"workload": f"bank/x\n{forged}\r\n{forged}"})
        assert answer.status_code == 403, answer.text
    refusals = [r.getMessage() for r in caplog.records if "bank/x" in r.getMessage()]
    assert refusals, [r.getMessage() for r in caplog.records]
    for line in refusals:
        assert "\n" not in line and "\r" not in line, line
