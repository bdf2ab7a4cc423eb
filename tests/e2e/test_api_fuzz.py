"""Schema-driven fuzzing of the whole controller API against a real lab (schemathesis over the served
/openapi.json, HTTPS verified with the lab CA).

Negative mode, every operation: schema-violating requests (malformed or missing token, bodies of the
wrong type or shape, out-of-range query values, random bytes). Positive mode, read-only operations:
valid GETs. Every answer must be < 500, and every 4xx the API's JSON error body. Afterwards the store
(revision, objects, tokens), every agent's kernel table and the agents' sync are exactly as before,
and the audit log shows no successful write. The number of requests is printed (`pytest -s`) and must
reach a floor, so the test fails if schemathesis silently generated nothing.
"""

from __future__ import annotations

import functools
import json
import subprocess
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Iterator

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, Verbosity, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from stockade.dataplane.nft_driver import NftDriver
from tests.e2e.conftest import EXAMPLES, Lab, make_lab

pytestmark = pytest.mark.kernel

HOSTS = ("hv1", "hv2")
NEGATIVE_AUTH_EXAMPLES = 10  # per operation, token fuzzed as well
NEGATIVE_EXAMPLES = 30       # per operation with parameters or a body, admin token
POSITIVE_EXAMPLES = 12       # per read-only operation
FUZZ_BUDGET = 50.0           # seconds for the three passes (~16 s here); the lab and the checks take ~12 s more
REQUEST_TIMEOUT = 15.0       # no request may hang: a timeout is a failure, not a skip
MIN_NEGATIVE = 300           # floors: fail if generation silently produced (almost) nothing
MIN_POSITIVE = 60
# Long polls: /watch (timeout, default 30 s) and /flows (follow_timeout) wait when nothing new comes.
# They are fuzzed like every other route; a *valid* wait (absent, or a number in range) is shortened
# to this, an invalid one is sent as generated so that its 422 is still exercised.
SHORT_POLL = 0.2
POLL_PARAMS = {"/api/v1/watch": "timeout", "/api/v1/flows": "follow_timeout"}


@dataclass
class Tally:
    mode: str
    sent: Counter[str] = field(default_factory=Counter)          # per operation
    statuses: Counter[int] = field(default_factory=Counter)
    skipped: dict[str, str] = field(default_factory=dict)        # operation -> why it has no such input
    unsent: Counter[str] = field(default_factory=Counter)        # refused by the HTTP client itself
    out_of_time: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.sent.values())

    def summary(self) -> str:
        lines = [f"{self.mode}: {self.total} requests over {len(self.sent)} operations, "
                 f"statuses {dict(sorted(self.statuses.items()))}"]
        lines += [f"  {n:4d}  {label}" for label, n in sorted(self.sent.items())]
        lines += [f"     -  {label}: not in this pass, {why}" for label, why in sorted(self.skipped.items())]
        if self.unsent:
            lines.append(f"  not sendable by the HTTP client (skipped): {dict(self.unsent)}")
        if self.out_of_time:
            lines.append(f"  cut short by the time budget: {', '.join(self.out_of_time)}")
        return "\n".join(lines)


@pytest.fixture(scope="module")
def fuzz_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    for lab in make_lab(tmp_path_factory.mktemp("fuzz"), hosts=len(HOSTS)):
        lab.cli("apply", "-f", str(EXAMPLES), "--wait", "--timeout", "60")
        yield lab


def _driver(lab: Lab, host: str) -> NftDriver:
    """The agent's own driver, run inside the hypervisor's netns: its fingerprint ignores handles and counters."""
    def runner(cmd: list[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ip", "netns", "exec", lab.hv_netns(host), *cmd], input=stdin,
                              capture_output=True, text=True, timeout=30)
    return NftDriver(runner=runner)


def _state(lab: Lab) -> dict[str, Any]:
    with lab.client() as client:
        snap = client.snapshot()
        status = client.status()
        tokens = client.tokens()
    return {
        "revision": snap["revision"],
        "objects": json.dumps(snap["objects"], sort_keys=True),
        "tokens": json.dumps(sorted(tokens, key=lambda t: t["id"]), sort_keys=True),
        "agents": {a["host"]: (a["revision"], a["programHash"], a["inSync"], a["error"]) for a in status["agents"]},
        "kernel": {h: _driver(lab, h).fingerprint() for h in HOSTS},
    }


def _in_sync(state: dict[str, Any]) -> bool:
    return (set(state["agents"]) == set(HOSTS) and
            all(rev == state["revision"] and ok and not err for rev, _, ok, err in state["agents"].values()))


def _shorten_polls(case: Any) -> None:
    param = POLL_PARAMS.get(case.path)
    if param is None:
        return
    query = dict(case.query or {})
    value = query.get(param)
    if value is None:
        query[param] = SHORT_POLL
    elif not isinstance(value, bool):
        try:
            number = float(value)
        except (TypeError, ValueError):
            return
        if 0 <= number <= 300:
            query[param] = min(number, SHORT_POLL)
    case.query = query


def _auth_is_generated_valid(case: Any) -> bool:
    """True when schemathesis meant the Authorization header to be valid: only then is the admin token put
    in. A mutated (missing, malformed) one is sent as generated; substituting a real token there would
    turn a negative request into a valid one (e.g. a real rollback to revision 0)."""
    meta = getattr(case, "meta", None)
    if meta is None:
        return False
    header = next((info for loc, info in meta.components.items() if getattr(loc, "value", loc) == "header"), None)
    return header is None or header.mode is GenerationMode.POSITIVE


def _describe(case: Any) -> str:
    body = "" if type(case.body).__name__ == "NotSet" else f" body={case.body!r:.300}"
    return f"{case.method} {case.formatted_path} query={case.query!r:.200}{body}"


def _check(case: Any, response: Any, negative: bool) -> str | None:
    where = f"{_describe(case)} -> {response.status_code}"
    if response.status_code >= 500:
        return f"server error: {where}: {response.text[:300]}"
    if 400 <= response.status_code < 500:
        try:
            body = response.json()
        except ValueError:
            return f"4xx without a JSON body: {where}: {response.text[:200]!r}"
        if not (isinstance(body, dict) and isinstance(body.get("error"), str)
                and isinstance(body.get("message"), str)):
            return f"4xx body without error/message: {where}: {body!r:.300}"
        return None
    if negative and case.method.upper() != "GET":
        return f"a schema-violating write was accepted: {where}: {response.text[:300]}"
    if case.path != "/metrics":
        try:
            response.json()
        except ValueError:
            return f"2xx without a JSON body: {where}: {response.text[:200]!r}"
    return None


def _inputs(op: Any) -> set[str]:
    """What a request of this operation carries besides the path: parameters, body, token."""
    raw = op.definition.raw
    return ({"parameters"} if raw.get("parameters") else set()) | ({"body"} if raw.get("requestBody") else set()) \
        | ({"token"} if raw.get("security") else set())


def _fuzz(schema: Any, session: Any, base_url: str, token: str, ca: str, *, name: str, mode: GenerationMode,
          examples: int, deadline: float, select: Callable[[Any], str | None], fixed_token: bool = False) -> Tally:
    """Run `examples` cases of `mode` for each operation that `select` returns None for (else: why not).
    fixed_token: the admin token is part of the strategy, so every violation is in the path, query or body;
    otherwise schemathesis also violates the Authorization header (missing, not a bearer token, ...)."""
    negative = mode is GenerationMode.NEGATIVE
    tally = Tally(name)
    auth = {"Authorization": f"Bearer {token}"}
    for result in schema.get_all_operations():
        op = result.ok()
        reason = select(op)
        if reason is not None:
            tally.skipped[op.label] = reason
            continue
        if time.monotonic() >= deadline:
            tally.out_of_time.append(op.label)
            continue
        strategy = op.as_strategy(generation_mode=mode, headers=auth if fixed_token else None)

        @settings(max_examples=examples, deadline=None, database=None, phases=[Phase.generate],
                  suppress_health_check=list(HealthCheck), print_blob=False, verbosity=Verbosity.quiet)
        @given(case=strategy)
        def run(case: Any) -> None:
            if time.monotonic() >= deadline:
                if op.label not in tally.out_of_time:
                    tally.out_of_time.append(op.label)
                return
            _shorten_polls(case)
            headers = auth if fixed_token or _auth_is_generated_valid(case) else None
            try:
                response = case.call(base_url=base_url, session=session, headers=headers,
                                     timeout=REQUEST_TIMEOUT, verify=ca)
            except (requests.exceptions.InvalidHeader, requests.exceptions.InvalidURL,
                    UnicodeEncodeError) as e:
                tally.unsent[type(e).__name__] += 1
                return
            except requests.exceptions.RequestException as e:  # refused, reset, timed out: the server's fault
                tally.sent[op.label] += 1
                tally.failures.append(f"no answer: {_describe(case)}: {type(e).__name__}: {e}")
                return
            tally.sent[op.label] += 1
            tally.statuses[response.status_code] += 1
            problem = _check(case, response, negative)
            if problem:
                tally.failures.append(problem)

        try:
            run()
        except Unsatisfiable:
            tally.skipped[op.label] = "schemathesis found no such input"
    return tally


def test_fuzzing_the_api_gives_no_500_and_changes_nothing(fuzz_lab: Lab) -> None:
    before = _state(fuzz_lab)
    assert _in_sync(before), before["agents"]
    assert all(before["kernel"].values()), before["kernel"]

    ctx = fuzz_lab.context()
    base_url = ctx.controller.rstrip("/")
    assert base_url.startswith("https://") and ctx.ca
    session = requests.Session()
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json", verify=ctx.ca, timeout=REQUEST_TIMEOUT)
    operations = [r.ok().label for r in schema.get_all_operations()]
    assert len(operations) >= 15, operations  # the whole API, not a stub

    audit_from = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
    started = time.monotonic()
    deadline = started + FUZZ_BUDGET
    run = functools.partial(_fuzz, schema, session, base_url, ctx.token, ctx.ca, deadline=deadline)
    passes = [
        # Violations anywhere, the Authorization header included (schemathesis mostly picks it): 401s.
        run(name="Negative, token fuzzed too", mode=GenerationMode.NEGATIVE, examples=NEGATIVE_AUTH_EXAMPLES,
            select=lambda op: None if _inputs(op) else "takes no parameters, body or token"),
        # With the admin token: violations in the path, query and body reach validation and the handlers.
        run(name="Negative, admin token", mode=GenerationMode.NEGATIVE, examples=NEGATIVE_EXAMPLES,
            fixed_token=True,
            select=lambda op: None if _inputs(op) - {"token"} else "takes no parameters or body"),
        # Valid reads, for no 500 (writes are not fuzzed positively: they would change the state).
        run(name="Positive, read-only", mode=GenerationMode.POSITIVE, examples=POSITIVE_EXAMPLES,
            select=lambda op: None if op.method.upper() == "GET" else "not read-only"),
    ]
    fuzz_seconds = time.monotonic() - started
    negative = sum(p.total for p in passes[:2])
    positive = passes[2].total

    report = (f"API fuzz: {negative + positive} requests ({negative} negative, {positive} positive) in "
              f"{fuzz_seconds:.1f} s over {len(operations)} operations\n" + "\n".join(p.summary() for p in passes))
    print("\n" + report)

    failures = [f for p in passes for f in p.failures]
    assert not failures, f"{len(failures)} bad answers:\n" + "\n".join(failures[:20]) + "\n\n" + report
    assert negative >= MIN_NEGATIVE and positive >= MIN_POSITIVE, report
    # Every operation was sent negative requests, but /healthz and /metrics: they take no parameters,
    # body or token, so nothing in them can violate the schema (the positive pass covers them).
    assert set(passes[0].sent) | set(passes[1].sent) == set(operations) - {"GET /healthz", "GET /metrics"}, report
    assert {label for label in operations if label.startswith("GET ")} == set(passes[2].sent), report

    # Found by this fuzz: lax validation took {"revision": true} as revision 1 and rolled back to it.
    for body in ({"revision": True}, {"revision": "1"}, {"revision": 1.0}, {"revision": False}):
        answer = session.post(f"{base_url}/api/v1/rollback", json=body, timeout=REQUEST_TIMEOUT, verify=ctx.ca,
                              headers={"Authorization": f"Bearer {ctx.token}"})
        assert answer.status_code == 422 and answer.json()["error"], (body, answer.status_code, answer.text)

    with fuzz_lab.client() as client:
        # A backup is a read, audited (who took the store's token hashes away): not a write.
        writes = [e for e in client.audit(since=audit_from, limit=10_000)
                  if e["outcome"] == "ok" and e["action"] != "store.backup"]
    assert not writes, f"the fuzz wrote something: {writes[:5]}\n{report}"
    after = _state(fuzz_lab)
    for key in ("revision", "objects", "tokens", "kernel", "agents"):
        assert after[key] == before[key], f"{key} changed by the fuzz:\n{before[key]}\n{after[key]}\n{report}"
    assert _in_sync(after), after["agents"]
