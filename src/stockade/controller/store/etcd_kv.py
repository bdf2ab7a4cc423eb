"""A small typed face on etcd's v3 KV API (range and txn), over the `etcd3gw` client.

`etcd3gw` speaks to etcd's JSON gateway (`/v3/kv/range`, `/v3/kv/txn`) with `requests`,
TLS included (CA, client certificate). This module adds what the store backend needs
around it and nothing more (docs/architecture.md says why this client):

- several endpoints: a call that cannot reach one member moves to the next;
- keys and values as bytes (base64 on the wire is done here, once);
- etcd's answers as frozen values (`KeyValue`, `TxnResult`), int64s as ints;
- foreign errors translated at this boundary: `ControllerUnavailable` (503) when no member
  answers (or the cluster has no quorum), `PayloadTooLarge` (413) when a transaction
  exceeds the cluster's `--max-txn-ops` or `--max-request-bytes`, `StockadeError` (500) for
  any other refusal, and `OutcomeUnknown` (a signal inside the store, not an error of the tree)
  when a transaction was sent but no answer came: it may or may not have been applied,
  and only the caller can tell by reading back (a commit does, by its commit id).

Invariants: a read is never an error because one member is down while another answers; a
transaction is never sent twice by this module (a second try is the caller's decision).
"""

from __future__ import annotations

import base64
import json
import threading
import time
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import etcd3gw
import requests
from etcd3gw import exceptions as etcd_errors

from stockade.controller.store.location import Endpoint, TlsFiles
from stockade.errors import ControllerUnavailable, PayloadTooLarge, StockadeError

API_PATH = "/v3/"          # etcd >= 3.4 serves its JSON gateway here (no discovery round trip)
DEFAULT_TIMEOUT = 30.0     # seconds per call; a 10,000-object commit takes about one
# A read waits this long for a member that must agree with a quorum (etcd holds a linearizable
# read while there is no leader); then it is asked again as a serializable read (below).
READ_TIMEOUT = 2.0
# While the quorum is known lost, reads go straight to the serializable form and the quorum's
# return is tried at most this often: else every read of a request would wait READ_TIMEOUT
# first, and an apply (several reads) would outlast its client's patience instead of being
# refused at once with the reason.
QUORUM_RECHECK = 1.0
PAGE = 2000                # keys per range call when reading a whole prefix
# etcd's gRPC code for a request it refuses as too big (too many ops, too many bytes).
_INVALID_ARGUMENT = 3
_TOO_LARGE = ("too many operations in txn request", "request is too large")


class OutcomeUnknown(Exception):
    """A transaction was sent and no answer came back: it may have been applied or not. A signal
    to this module's callers in the store, which read back and try again; never raised beyond
    the store (not an error of the tree, `stockade.errors`)."""


@dataclass(frozen=True)
class KeyValue:
    key: bytes
    value: bytes
    mod_revision: int     # etcd's own revision of the key's last change (not a Stockade revision)
    version: int          # how often the key was written since it was created


@dataclass(frozen=True)
class TxnResult:
    succeeded: bool
    revision: int                                  # etcd's revision after the transaction
    ranges: tuple[tuple[KeyValue, ...], ...]       # the answers of the branch's range ops, in order


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def prefix_end(prefix: bytes) -> bytes:
    """The first key after every key that starts with `prefix` (etcd's range_end for a prefix)."""
    end = bytearray(prefix)
    while end and end[-1] == 0xFF:
        end.pop()
    if not end:
        return b"\0"  # every key
    end[-1] += 1
    return bytes(end)


def _kv(raw: dict[str, Any]) -> KeyValue:
    return KeyValue(base64.b64decode(raw["key"]), base64.b64decode(raw.get("value", "")),
                    int(raw.get("mod_revision", 0)), int(raw.get("version", 0)))


# ------------------------------------------------------------------ operations and comparisons

def put(key: bytes, value: bytes) -> dict[str, Any]:
    return {"request_put": {"key": b64(key), "value": b64(value)}}


def delete(key: bytes, range_end: bytes | None = None) -> dict[str, Any]:
    op: dict[str, Any] = {"key": b64(key)}
    if range_end is not None:
        op["range_end"] = b64(range_end)
    return {"request_delete_range": op}


def get(key: bytes) -> dict[str, Any]:
    return {"request_range": {"key": b64(key)}}


def mod_is(key: bytes, mod_revision: int) -> dict[str, Any]:
    """The key was last changed at etcd revision `mod_revision` (0: the key does not exist)."""
    return {"key": b64(key), "target": "MOD", "result": "EQUAL", "mod_revision": mod_revision}


class EtcdKV:
    """Range and txn on an etcd cluster reached through any of `endpoints`; thread-safe
    (each thread gets its own HTTP session, as `requests` sessions are not for sharing)."""

    def __init__(self, endpoints: Sequence[Endpoint], tls: TlsFiles | None = None,
                 timeout: float = DEFAULT_TIMEOUT) -> None:
        if not endpoints:
            raise ValueError("at least one etcd endpoint is needed")
        self.endpoints = tuple(endpoints)
        self._tls = tls
        self._timeout = timeout
        self._scheme = "https" if tls is not None else "http"
        self._current = 0          # the member that answered last: asked first next time
        self._lock = threading.Lock()
        self._local = threading.local()
        self._sessions: list[Any] = []
        # Set when the last read could not be served linearizably but a member answered it from
        # what it holds: the cluster has no quorum (or no leader), so a write is refused at once.
        self.quorum_lost = False
        self._quorum_recheck_at = 0.0  # monotonic time after which a linearizable read is tried again

    def _client(self, index: int, read: bool = False) -> etcd3gw.Etcd3Client:
        clients: dict[tuple[int, bool], etcd3gw.Etcd3Client] | None = getattr(self._local, "clients", None)
        if clients is None:
            clients = self._local.clients = {}
        client = clients.get((index, read))
        if client is None:
            e = self.endpoints[index]
            timeout = min(self._timeout, READ_TIMEOUT) if read else self._timeout
            client = etcd3gw.Etcd3Client(host=e.host, port=e.port, protocol=self._scheme, timeout=timeout,
                                         api_path=API_PATH, session=self._session())
            clients[(index, read)] = client
            with self._lock:
                self._sessions.append(client.session)
        return client

    def _session(self) -> requests.Session:
        session = requests.Session()
        # Not from the environment: REQUESTS_CA_BUNDLE would replace the etcd CA given here (requests
        # prefers it to the session's own), and an HTTP(S)_PROXY would carry the store's traffic.
        session.trust_env = False
        if self._tls is not None:
            session.verify = self._tls.ca or True  # no --etcd-ca: the system's CAs
            if self._tls.cert:
                session.cert = (self._tls.cert, self._tls.key) if self._tls.key else self._tls.cert
        return session

    def _post(self, path: str, body: dict[str, Any], *, retry: bool) -> dict[str, Any]:
        """POST `body` to the first member that answers; with `retry` False (a transaction), only
        the first member is tried once and a lost answer is `OutcomeUnknown`."""
        with self._lock:
            start = self._current
        problems: list[str] = []
        count = len(self.endpoints) if retry else 1
        for step in range(count):
            index = (start + step) % len(self.endpoints)
            client = self._client(index, read=retry)
            try:
                answer: dict[str, Any] = client.post(client.get_url(path), data=json.dumps(body))
            except (etcd_errors.ConnectionFailedError, etcd_errors.ConnectionTimeoutError) as e:
                problems.append(f"{self.endpoints[index]}: {type(e).__name__}")
                with self._lock:  # next call starts with the next member
                    self._current = (index + 1) % len(self.endpoints)
                if not retry:
                    raise OutcomeUnknown(f"etcd {self.endpoints[index]} did not answer a transaction "
                                         f"({type(e).__name__}); it may or may not have been applied") from e
                continue
            except etcd_errors.Etcd3Exception as e:
                raise _translate(e, self.endpoints[index]) from e
            with self._lock:
                self._current = index
            return answer
        raise ControllerUnavailable("the etcd cluster cannot be reached or has no quorum: " + "; ".join(problems))

    # ------------------------------------------------------------------ reads

    def range(self, key: bytes, range_end: bytes | None = None, *, revision: int = 0, limit: int = 0,
              descend: bool = False) -> tuple[int, list[KeyValue], bool]:
        """(etcd revision read at, key-values in key order, whether more are left beyond `limit`).
        `revision` > 0 reads the keys as they were at that etcd revision (a consistent snapshot)."""
        body: dict[str, Any] = {"key": b64(key)}
        if range_end is not None:
            body["range_end"] = b64(range_end)
        if revision:
            body["revision"] = revision
        if limit:
            body["limit"] = limit
        if descend:
            body["sort_order"] = "DESCEND"
            body["sort_target"] = "KEY"
        answer = None
        if self._quorum_check_due():
            try:
                answer = self._post("/kv/range", body, retry=True)
                self.quorum_lost = False
            except (ControllerUnavailable, StockadeError):
                with self._lock:
                    self._quorum_recheck_at = time.monotonic() + QUORUM_RECHECK
        if answer is None:
            # No member could answer with the quorum's agreement: one that is up can still tell
            # what it holds. Reads go on, perhaps a little behind; writes need the quorum back.
            body["serializable"] = True
            answer = self._post("/kv/range", body, retry=True)
            self.quorum_lost = True
        return (int(answer["header"]["revision"]), [_kv(kv) for kv in answer.get("kvs", [])],
                bool(answer.get("more", False)))

    def _quorum_check_due(self) -> bool:
        """Whether this read asks for the quorum's agreement: always while the quorum is there; while
        it is lost, one read in each QUORUM_RECHECK (the others are served from what a member holds)."""
        with self._lock:
            if not self.quorum_lost:
                return True
            now = time.monotonic()
            if now < self._quorum_recheck_at:
                return False
            self._quorum_recheck_at = now + QUORUM_RECHECK + READ_TIMEOUT  # one thread tries; others go on
            return True

    def get(self, key: bytes, revision: int = 0) -> tuple[int, KeyValue | None]:
        """(etcd revision read at, the key's value or None)."""
        at, kvs, _ = self.range(key, revision=revision)
        return at, (kvs[0] if kvs else None)

    def scan(self, start: bytes, end: bytes, revision: int = 0, page: int = PAGE) -> Iterator[KeyValue]:
        """Every key in [start, end) as it was at etcd `revision` (0: now), in key order, page
        by page, every page at the same etcd revision."""
        while True:
            at, kvs, more = self.range(start, end, revision=revision, limit=page)
            revision = revision or at
            yield from kvs
            if not more or not kvs:
                return
            start = kvs[-1].key + b"\0"

    def scan_descending(self, start: bytes, end: bytes) -> Iterator[KeyValue]:
        """Every key in [start, end), newest key first, page by page (at one etcd revision)."""
        at = 0
        while True:
            at_now, kvs, more = self.range(start, end, revision=at, limit=PAGE, descend=True)
            at = at or at_now
            yield from kvs
            if not more or not kvs:
                return
            end = kvs[-1].key

    # ----------------------------------------------------------------- writes

    def txn(self, compare: Sequence[dict[str, Any]], success: Sequence[dict[str, Any]],
            failure: Sequence[dict[str, Any]] = ()) -> TxnResult:
        """One etcd transaction: if every comparison holds, the success ops, else the failure ops.
        Refused without being sent while the cluster has no quorum (see `quorum_lost`)."""
        if self.quorum_lost:
            raise ControllerUnavailable("the etcd cluster has no quorum (no member could serve a read with a "
                                        "majority's agreement): changes are refused, and nothing of this one was "
                                        "stored, until a majority of its members is back")
        answer = self._post("/kv/txn", {"compare": list(compare), "success": list(success),
                                        "failure": list(failure)}, retry=False)
        ranges = tuple(tuple(_kv(kv) for kv in r["response_range"].get("kvs", []))
                       for r in answer.get("responses", []) if "response_range" in r)
        return TxnResult(bool(answer.get("succeeded", False)), int(answer["header"]["revision"]), ranges)

    def close(self) -> None:
        with self._lock:
            sessions, self._sessions = self._sessions, []
        for session in sessions:
            session.close()
        self._local = threading.local()


def _translate(e: etcd_errors.Etcd3Exception, endpoint: Endpoint) -> Exception:
    """etcd's refusal as one of ours. The gateway answers `{"error", "code", "message"}`; the
    code is gRPC's, the message etcd's fixed text for the error (rpctypes), so it is read here,
    at the boundary, and nowhere else."""
    try:
        body = json.loads(e.detail_text or "")
    except ValueError:
        body = {}
    message = str(body.get("message") or body.get("error") or e.detail_text or e)
    if body.get("code") == _INVALID_ARGUMENT and any(text in message for text in _TOO_LARGE):
        return PayloadTooLarge(
            f"the change is too large for one etcd transaction ({message}): start every etcd member with "
            "a higher --max-txn-ops and --max-request-bytes (docs/operations.md), or split the change")
    return StockadeError(f"etcd {endpoint} refused the request: {message}")
