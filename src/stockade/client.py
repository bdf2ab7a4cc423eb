"""Client of the controller's REST API, over TCP (`http://host:port`, `https://host:port`) or a unix
socket (`unix:///path`).

HTTPS is always verified: against the CA bundle given as `ca` (the lab's own
CA), or else the system's trust store. A certificate that does not verify is a
`ControllerUnavailable` that says so and names the URL; there is no switch to
turn verification off.

Used by the CLI and by agents. Invariants:
- A non-2xx answer is raised as the typed error the controller raised
  (`errors.error_from_response`); a failure to connect, or a transport error,
  as `ControllerUnavailable` naming the URL. Nothing else escapes.
- The token goes only into the Authorization header; it is never part of an
  error message.

`ControllerClient` is synchronous (the CLI; an agent may call it from
threads); `AsyncControllerClient` has the same methods as coroutines, each run in
a worker thread. Both describe each call once, in `_Call`, so they cannot drift
apart. HTTP is `stockade.transport` (the standard library's http.client, with
kept-alive connections), not httpx: every agent process loads this module, and
httpx cost each host ~8 MB of resident memory (docs/performance.md).
"""

from __future__ import annotations

import asyncio
import http.client
import json
import socket
import ssl
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence
from urllib.parse import quote, urlencode, urlsplit

from stockade.errors import ControllerUnavailable, StockadeError, ValidationError, error_from_response
from stockade.listing import loads_with_lazy_array
from stockade.model.kinds import ObjectKey, parse_stored
from stockade.model.reports import AgentReport, FlowRecord
from stockade.model.state import DesiredState
from stockade.transport import RETRY_SAFE, Response, Transport

API = "/api/v1"
DEFAULT_TIMEOUT = 10.0
DEFAULT_WATCH_TIMEOUT = 30.0
# The flow query's filters beside the named arguments of `flows` (GET /api/v1/flows takes them as they are).
FLOW_FILTERS = ("from", "to", "verdict", "port", "protocol", "rule")

ObjectRefLike = ObjectKey | Mapping[str, Any] | Sequence[str]


@dataclass(frozen=True)
class _Call:
    method: str
    path: str
    json: Any = None
    params: dict[str, Any] = field(default_factory=dict)
    extra_timeout: float = 0.0  # a long-poll holds the response this much longer than usual


def _object_ref(ref: ObjectRefLike) -> dict[str, Any]:
    if isinstance(ref, ObjectKey):
        return {"kind": ref.kind, "namespace": ref.namespace or None, "name": ref.name}
    if isinstance(ref, Mapping):
        return {"kind": ref["kind"], "namespace": ref.get("namespace"), "name": ref["name"]}
    kind, namespace, name = ref
    return {"kind": kind, "namespace": namespace or None, "name": name}


class _Calls:
    """Every API call, described once."""

    @staticmethod
    def healthz() -> _Call:
        return _Call("GET", "/healthz")

    @staticmethod
    def apply(documents: Sequence[Any], message: str, namespace: str | None) -> _Call:
        return _Call("POST", f"{API}/apply",
                     json={"documents": list(documents), "message": message, "namespace": namespace})

    @staticmethod
    def delete(objects: Iterable[ObjectRefLike], message: str) -> _Call:
        return _Call("POST", f"{API}/delete",
                     json={"objects": [_object_ref(o) for o in objects], "message": message})

    @staticmethod
    def list(kind: str, namespace: str | None, name: str | None) -> _Call:
        params = {k: v for k, v in (("namespace", namespace), ("name", name)) if v is not None}
        return _Call("GET", f"{API}/objects/{quote(kind, safe='')}", params=params)

    @staticmethod
    def snapshot() -> _Call:
        return _Call("GET", f"{API}/snapshot")

    @staticmethod
    def watch(since: int, timeout: float, view: str | None = None) -> _Call:
        params: dict[str, Any] = {"since": since, "timeout": timeout}
        if view is not None:
            params["view"] = view
        return _Call("GET", f"{API}/watch", params=params, extra_timeout=timeout)

    @staticmethod
    def report_status(host: str, report: AgentReport | Mapping[str, Any] | None, revision: int | None,
                      program_hash: str | None, applied_at: str | None, in_sync: bool, error: str | None,
                      endpoints: Mapping[str, Mapping[str, Any]] | None) -> _Call:
        if isinstance(report, AgentReport):
            body = report.to_dict()
        elif report is not None:
            body = dict(report)  # already in wire form: {revision, programHash, ..., endpoints}
        elif revision is None:
            raise ValidationError.single(f"agent {host}", "revision", "a status report needs the revision")
        else:
            body = {"revision": revision, "programHash": program_hash, "appliedAt": applied_at,
                    "inSync": in_sync, "error": error,
                    "endpoints": {k: dict(v) for k, v in (endpoints or {}).items()}}
        return _Call("PUT", f"{API}/agents/{quote(host, safe='')}/status", json=body)

    @staticmethod
    def send_flows(host: str, records: Sequence[FlowRecord | Mapping[str, Any]], dropped: int) -> _Call:
        return _Call("PUT", f"{API}/agents/{quote(host, safe='')}/flows",
                     json={"records": [r.to_dict() if isinstance(r, FlowRecord) else dict(r) for r in records],
                           "dropped": dropped})

    @staticmethod
    def flows(since_seq: int | None, since: str | datetime | None, namespace: str | None, workload: str | None,
              denied: bool, limit: int | None, follow_timeout: float | None,
              filters: Mapping[str, Any] | None = None) -> _Call:
        if isinstance(since, datetime):
            since = since.isoformat()
        params: dict[str, Any] = {k: v for k, v in (
            ("since_seq", since_seq), ("since", since), ("namespace", namespace), ("workload", workload),
            ("limit", limit), ("follow_timeout", follow_timeout)) if v is not None}
        if denied:
            params["denied"] = "true"
        for key in FLOW_FILTERS:
            value = (filters or {}).get(key)
            if value not in (None, "", [], ()):
                params[key] = list(value) if isinstance(value, (list, tuple)) else value
        return _Call("GET", f"{API}/flows", params=params, extra_timeout=follow_timeout or 0.0)

    @staticmethod
    def status() -> _Call:
        return _Call("GET", f"{API}/status")

    @staticmethod
    def rules(rule: str | None) -> _Call:
        return _Call("GET", f"{API}/rules", params={"rule": rule} if rule is not None else {})

    @staticmethod
    def revisions(limit: int | None) -> _Call:
        return _Call("GET", f"{API}/revisions", params={"limit": limit} if limit is not None else {})

    @staticmethod
    def diff(documents: Sequence[Any], namespace: str | None) -> _Call:
        return _Call("POST", f"{API}/diff", json={"documents": list(documents), "namespace": namespace})

    @staticmethod
    def rollback(revision: int, message: str) -> _Call:
        return _Call("POST", f"{API}/rollback", json={"revision": revision, "message": message})

    @staticmethod
    def audit(since: str | None, limit: int) -> _Call:
        params: dict[str, Any] = {"limit": limit}
        if since:
            params["since"] = since
        return _Call("GET", f"{API}/audit", params=params)

    @staticmethod
    def give_connections(namespace: str, name: str, revision: int, entries: Sequence[Mapping[str, Any]]) -> _Call:
        return _Call("PUT", f"{API}/handoffs/{quote(namespace, safe='')}/{quote(name, safe='')}",
                     json={"revision": revision, "entries": [dict(e) for e in entries]})

    @staticmethod
    def take_connections(namespace: str, name: str) -> _Call:
        return _Call("GET", f"{API}/handoffs/{quote(namespace, safe='')}/{quote(name, safe='')}")

    @staticmethod
    def backup() -> _Call:
        # Reading a large store at one revision takes a while: more than a read's timeout.
        return _Call("GET", f"{API}/backup", extra_timeout=120.0)

    @staticmethod
    def create_token(role: str, namespaces: Sequence[str], ttl: str | None, name: str | None,
                     host: str | None) -> _Call:
        body: dict[str, Any] = {"role": role, "namespaces": list(namespaces)}
        for key, value in (("ttl", ttl), ("name", name), ("host", host)):
            if value:
                body[key] = value
        return _Call("POST", f"{API}/tokens", json=body)

    @staticmethod
    def tokens() -> _Call:
        return _Call("GET", f"{API}/tokens")

    @staticmethod
    def revoke_token(ref: str) -> _Call:
        return _Call("DELETE", f"{API}/tokens/{quote(ref, safe='')}")


def state_from_snapshot(snapshot: Mapping[str, Any]) -> DesiredState:
    """A snapshot answer as a DesiredState, keeping each object's `status` (addresses, netns)."""
    return DesiredState.from_objects(int(snapshot["revision"]), (parse_stored(d) for d in snapshot["objects"]))


def _tls_context(ca: str | Path | None) -> ssl.SSLContext:
    """Verification against `ca` (a PEM bundle) or, without it, the system's trust store."""
    try:
        return ssl.create_default_context(cafile=str(ca) if ca is not None else None)
    except (OSError, ValueError) as e:  # ssl.SSLError is an OSError: a file that holds no certificate
        raise StockadeError(f"cannot load the CA bundle {ca}: {e}; is STOCKADE_CA / the config's `ca` right?") \
            from None


# What a failed exchange raises (stockade.transport): OSError covers refused and reset
# connections, timeouts and ssl.SSLError; HTTPException an answer that is not HTTP.
TRANSPORT_ERRORS = (OSError, http.client.HTTPException)


def _query_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _query_string(params: Mapping[str, Any]) -> str:
    """`params` URL-encoded; a list value repeats its key (`verdict=deny&verdict=reject`)."""
    return urlencode({k: [_query_value(x) for x in v] if isinstance(v, list) else _query_value(v)
                      for k, v in params.items()}, doseq=True)


@dataclass
class _Endpoint:
    """One controller replica's address and the kept-alive connections to it."""

    url: str
    https: bool
    uds: str | None
    prefix: str
    transport: Transport


def _endpoint(url: str, token: str | None, timeout: float, ca: str | Path | None) -> _Endpoint:
    parts = urlsplit(url)
    https = parts.scheme == "https"
    port: int | None = None
    if parts.scheme == "unix":
        if not parts.path:
            raise ValidationError.single("", "url", f"{url!r}: a unix URL is unix:///path/to/socket")
        uds: str | None = parts.path
        prefix = ""
    elif parts.scheme in ("http", "https") and parts.hostname:
        uds = None
        prefix = parts.path.rstrip("/")  # requests go below the URL's path, if it has one
        try:
            port = parts.port or (443 if https else 80)
        except ValueError:
            raise ValidationError.single("", "url", f"{url!r}: the port is not a number up to 65535") from None
    else:
        raise ValidationError.single("", "url", f"{url!r}: expected http(s)://HOST:PORT or unix:///PATH")
    # Built only for https: plain and unix URLs need no trust store (and an unused `ca` is harmless).
    tls = _tls_context(ca) if https else None
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return _Endpoint(url, https, uds, prefix, Transport(host=parts.hostname, port=port, unix_path=uds, tls=tls,
                                                        headers=headers, timeout=timeout))


# Failures that happen before a request leaves this machine: nothing reached that replica, so
# any request, a write too, may go to the next one. After a request was sent, only a request
# that cannot change anything (RETRY_SAFE) is sent to another replica: a write whose answer
# was lost may have been committed, and doing it twice is not always harmless (a rollback).
_NOT_SENT = (ConnectionRefusedError, FileNotFoundError, socket.gaierror)


class _Base:
    """`url` is one controller, or several replicas of one as a comma-separated list: a call
    goes to the replica that answered last, and moves on to the next one when that one cannot
    be reached (see _NOT_SENT for which calls may move)."""

    def __init__(self, url: str, token: str | None = None, timeout: float = DEFAULT_TIMEOUT,
                 ca: str | Path | None = None) -> None:
        self.url = url
        self.timeout = timeout
        self.ca = ca
        urls = [u.strip() for u in url.split(",") if u.strip()]
        if not urls:
            raise ValidationError.single("", "url", "no controller URL given")
        self._endpoints = [_endpoint(u, token, timeout, ca) for u in urls]
        self._active = 0

    @property
    def _transport(self) -> Transport:
        """The kept-alive connections to the replica in use."""
        return self._endpoints[self._active].transport

    @property
    def endpoint(self) -> str:
        """The URL of the replica the next call goes to first."""
        return self._endpoints[self._active].url

    def close(self) -> None:
        for endpoint in self._endpoints:
            endpoint.transport.close()

    def _exchange(self, call: _Call, lazy: str | None = None) -> dict[str, Any]:
        """One call, blocking: the answer's JSON object, or the typed error. With `lazy`, the array
        under that key of a successful answer is a `listing.LazyArray` (parsed item by item)."""
        body = None
        if call.json is not None:
            body = json.dumps(call.json, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()
        first = self._active
        failures: list[ControllerUnavailable] = []
        for step in range(len(self._endpoints)):
            index = (first + step) % len(self._endpoints)
            endpoint = self._endpoints[index]
            target = endpoint.prefix + call.path
            if call.params:
                target += "?" + _query_string(call.params)
            try:
                response = endpoint.transport.request(call.method, target, body,
                                                      timeout=self.timeout + call.extra_timeout)
            except TRANSPORT_ERRORS as e:
                failures.append(self._unavailable(e, endpoint))
                if endpoint.transport.closed:
                    break  # close() ended it (a stopping agent): no other replica either
                if call.method in RETRY_SAFE or isinstance(e, _NOT_SENT):
                    continue
                break
            self._active = index
            return self._answer(response, lazy)
        if len(failures) == 1:
            raise failures[0]
        raise ControllerUnavailable("no controller replica answered: " + "; ".join(f.message for f in failures))

    def _answer(self, response: Response, lazy: str | None) -> dict[str, Any]:
        if lazy is not None and response.is_success:
            status = response.status
            try:
                text = response.body.decode()
                del response  # the text is what the lazy array parses; the bytes can go
                return loads_with_lazy_array(text, lazy)
            except ValueError:  # UnicodeDecodeError and JSONDecodeError among them
                raise StockadeError(f"the controller answered {status} without a JSON object") from None
        return self._result(response)

    def _unavailable(self, exc: BaseException, endpoint: _Endpoint) -> ControllerUnavailable:
        url = endpoint.url
        if isinstance(exc, ssl.SSLCertVerificationError):
            reason = getattr(exc, "verify_message", None) or str(exc)
            where = f"the CA bundle {self.ca}" if self.ca is not None else "the system's trusted CAs"
            return ControllerUnavailable(
                f"cannot verify the controller's TLS certificate at {url} against {where}: {reason}; "
                f"is STOCKADE_CA / the config's `ca` right?")
        if isinstance(exc, ssl.SSLError):
            return ControllerUnavailable(f"TLS with the controller at {url} failed: {exc}; "
                                         f"does it serve HTTPS on that port?")
        hint = ""
        if not endpoint.https and endpoint.uds is None and isinstance(exc, http.client.HTTPException):
            # What a TLS listener does to a plain HTTP request: closes without an answer, or
            # answers with a TLS alert, which is no HTTP status line.
            hint = "; if it serves HTTPS, use an https:// URL"
        return ControllerUnavailable(f"cannot reach the controller at {url}: {type(exc).__name__}: {exc}{hint}")

    @staticmethod
    def _result(response: Response) -> dict[str, Any]:
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.is_success:
            if not isinstance(body, dict):
                raise StockadeError(f"the controller answered {response.status} without a JSON object")
            return body
        if not isinstance(body, dict):
            body = {"message": response.text[:500] or response.reason}
        raise error_from_response(response.status, body)


class ControllerClient(_Base):
    """Synchronous client. Use as a context manager, or call close()."""

    def __enter__(self) -> "ControllerClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self, call: _Call) -> dict[str, Any]:
        return self._exchange(call)

    def healthz(self) -> dict[str, Any]:
        """{"ok": true, "revision": N}; needs no token."""
        return self._run(_Calls.healthz())

    def apply(self, documents: Sequence[Any], message: str = "", namespace: str | None = None) -> dict[str, Any]:
        """{"revision", "results": [{kind, namespace, name, action}]}; ValidationError lists every problem."""
        return self._run(_Calls.apply(documents, message, namespace))

    def delete(self, objects: Iterable[ObjectRefLike], message: str = "") -> dict[str, Any]:
        """Objects as ObjectKey, {kind, namespace, name} or (kind, namespace, name)."""
        return self._run(_Calls.delete(objects, message))

    def snapshot(self) -> dict[str, Any]:
        """{"revision": N, "objects": [...]}."""
        return self._run(_Calls.snapshot())

    def snapshot_state(self) -> DesiredState:
        return state_from_snapshot(self.snapshot())

    def snapshot_lazy(self) -> dict[str, Any]:
        """As snapshot(), but "objects" is a read-only sequence whose items are parsed from the answer's
        text as they are read (`listing.LazyArray`): what the agent loads its cache from, so that
        the whole listing is never held as dicts at once (docs/performance.md)."""
        return self._exchange(_Calls.snapshot(), lazy="objects")

    def watch(self, since: int, timeout: float = DEFAULT_WATCH_TIMEOUT, view: str | None = None) -> dict[str, Any]:
        """{"revision", "events"} after `since`, long-polling up to `timeout` s; Gone: relist.
        An agent passes the `view` its snapshot named (its host's view of the state)."""
        return self._run(_Calls.watch(since, timeout, view))

    def report_status(self, host: str, report: AgentReport | Mapping[str, Any] | None = None, *,
                      revision: int | None = None,
                      program_hash: str | None = None, applied_at: str | None = None, in_sync: bool = False,
                      error: str | None = None, endpoints: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        """Tell the controller what `host` enforces: either `report` (an AgentReport, or its wire form
        {revision, programHash, appliedAt, inSync, error, endpoints}) or the keyword fields;
        endpoints: {"ns/name": {netns, interface, mac}}."""
        self._run(_Calls.report_status(host, report, revision, program_hash, applied_at, in_sync, error,
                                       endpoints))

    def status(self) -> dict[str, Any]:
        """{"revision", "enforcedRevision", "agents": [...]}."""
        return self._run(_Calls.status())

    def rules(self, rule: str | None = None) -> dict[str, Any]:
        """{"revision", "tiers": [{"name", "policies": [{..., "rules": [...]}]}], "defaults", "hosts", "omitted"}:
        every rule with the hosts' counters (controller.rule_hits); `rule`: only that rule id."""
        return self._run(_Calls.rules(rule))

    def send_flows(self, host: str, records: Sequence[FlowRecord | Mapping[str, Any]],
                   dropped: int = 0) -> dict[str, Any]:
        """Send flow records enforced on `host` (at most 5000 per call) and how many the agent dropped or
        sampled away since its previous call; {"accepted", "lastSeq"}. ValidationError names the bad field."""
        return self._run(_Calls.send_flows(host, records, dropped))

    def flows(self, since_seq: int | None = None, since: str | datetime | None = None,
              namespace: str | None = None, workload: str | None = None, denied: bool = False,
              limit: int | None = None, follow_timeout: float | None = None,
              filters: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """{"records": [... each with "seq"], "lastSeq", "firstSeq", "more", "dropped", "received"}.
        Without `since_seq` the newest records; with it those after it. `follow_timeout` long-polls for
        new matching records; pass the answer's lastSeq as the next since_seq. `filters`: any of
        FLOW_FILTERS (`from`, `to`, `verdict` (a list), `port`, `protocol`, `rule`)."""
        return self._run(_Calls.flows(since_seq, since, namespace, workload, denied, limit, follow_timeout, filters))

    def revisions(self, limit: int | None = None) -> list[dict[str, Any]]:
        """Revision history, newest first: [{revision, author, message, time, objects}]."""
        revisions: list[dict[str, Any]] = self._run(_Calls.revisions(limit))["revisions"]
        return revisions

    def diff(self, documents: Sequence[Any], namespace: str | None = None) -> dict[str, Any]:
        """{"revision", "objects": [per-object action and field changes], "flows": [verdict changes]}."""
        return self._run(_Calls.diff(documents, namespace))

    def rollback(self, revision: int, message: str = "") -> dict[str, Any]:
        """A new revision restoring the objects of `revision`; same answer as apply."""
        return self._run(_Calls.rollback(revision, message))

    def audit(self, since: str | None = None, limit: int = 1000) -> list[dict[str, Any]]:
        entries: list[dict[str, Any]] = self._run(_Calls.audit(since, limit))["entries"]
        return entries

    def backup(self) -> dict[str, Any]:
        """The whole store at one revision: a backup file's document (admins only)."""
        return self._run(_Calls.backup())

    def give_connections(self, namespace: str, name: str, revision: int,
                         entries: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """Hand a moved workload's open connections to its new host (the agent of the host it left)."""
        return self._run(_Calls.give_connections(namespace, name, revision, entries))

    def take_connections(self, namespace: str, name: str) -> dict[str, Any]:
        """{workload, from, revision, entries}: the connections handed to this host (NotFoundError: none yet)."""
        return self._run(_Calls.take_connections(namespace, name))

    def create_token(self, role: str, namespaces: Sequence[str] = (), ttl: str | None = None,
                     name: str | None = None, host: str | None = None) -> dict[str, Any]:
        """{"token": secret (shown once), "info": {...}}."""
        return self._run(_Calls.create_token(role, namespaces, ttl, name, host))

    def tokens(self) -> list[dict[str, Any]]:
        tokens: list[dict[str, Any]] = self._run(_Calls.tokens())["tokens"]
        return tokens

    def revoke_token(self, ref: str) -> dict[str, Any]:
        info: dict[str, Any] = self._run(_Calls.revoke_token(ref))["tokens"][0]
        return info

    # Last in the class body, so that `list[...]` in the annotations above is still the builtin.
    def list(self, kind: str, namespace: str | None = None, name: str | None = None) -> dict[str, Any]:
        """{"items": [...], "revision": N}; NotFoundError when `name` is given and missing."""
        return self._run(_Calls.list(kind, namespace, name))


class AsyncControllerClient(_Base):
    """The same API as coroutines, for code on an event loop. Each call runs in a worker thread
    (asyncio.to_thread), on the same kept-alive connections as the synchronous client."""

    async def aclose(self) -> None:
        self.close()

    async def __aenter__(self) -> "AsyncControllerClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _run(self, call: _Call) -> dict[str, Any]:
        return await asyncio.to_thread(self._exchange, call)

    async def healthz(self) -> dict[str, Any]:
        return await self._run(_Calls.healthz())

    async def apply(self, documents: Sequence[Any], message: str = "",
                    namespace: str | None = None) -> dict[str, Any]:
        return await self._run(_Calls.apply(documents, message, namespace))

    async def delete(self, objects: Iterable[ObjectRefLike], message: str = "") -> dict[str, Any]:
        return await self._run(_Calls.delete(objects, message))

    async def snapshot(self) -> dict[str, Any]:
        return await self._run(_Calls.snapshot())

    async def snapshot_state(self) -> DesiredState:
        return state_from_snapshot(await self.snapshot())

    async def watch(self, since: int, timeout: float = DEFAULT_WATCH_TIMEOUT,
                    view: str | None = None) -> dict[str, Any]:
        return await self._run(_Calls.watch(since, timeout, view))

    async def report_status(self, host: str, report: AgentReport | Mapping[str, Any] | None = None, *,
                            revision: int | None = None, program_hash: str | None = None,
                            applied_at: str | None = None, in_sync: bool = False, error: str | None = None,
                            endpoints: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        await self._run(_Calls.report_status(host, report, revision, program_hash, applied_at, in_sync, error,
                                             endpoints))

    async def status(self) -> dict[str, Any]:
        return await self._run(_Calls.status())

    async def rules(self, rule: str | None = None) -> dict[str, Any]:
        return await self._run(_Calls.rules(rule))

    async def send_flows(self, host: str, records: Sequence[FlowRecord | Mapping[str, Any]],
                         dropped: int = 0) -> dict[str, Any]:
        return await self._run(_Calls.send_flows(host, records, dropped))

    async def flows(self, since_seq: int | None = None, since: str | datetime | None = None,
                    namespace: str | None = None, workload: str | None = None, denied: bool = False,
                    limit: int | None = None, follow_timeout: float | None = None,
                    filters: Mapping[str, Any] | None = None) -> dict[str, Any]:
        return await self._run(_Calls.flows(since_seq, since, namespace, workload, denied, limit, follow_timeout,
                                            filters))

    async def revisions(self, limit: int | None = None) -> list[dict[str, Any]]:
        revisions: list[dict[str, Any]] = (await self._run(_Calls.revisions(limit)))["revisions"]
        return revisions

    # Last in the class body, so that `list[...]` in the annotations above is still the builtin.
    async def list(self, kind: str, namespace: str | None = None, name: str | None = None) -> dict[str, Any]:
        return await self._run(_Calls.list(kind, namespace, name))
