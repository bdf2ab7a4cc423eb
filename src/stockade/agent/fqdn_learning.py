"""What the trusted resolvers answered, and which learned-address sets it opens (issue 18).

    learner = LearnedNames(min_ttl=60, max_ttl=86400)
    elements = learner.learn(answer_of(response), program)   # [(set name, address, seconds)]
    learner.elements_for(program)                             # for a full replace: what is still alive

Only the DNS proxy (agent.dns_proxy) calls `learn`, with answers it got itself from a trusted
resolver: nothing a workload sends is ever learned. A name is kept, with each of its addresses
and when they expire, when some fqdn set of the current program wants it; a program that brings
a new pattern gets what was already learned for names under it. Element timeouts are the
record's TTL clamped to [min_ttl, max_ttl] (docs/policy.md says why). Thread-safe.
"""

from __future__ import annotations

import ipaddress
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterable

from stockade.model.fqdn import matches, normalise
from stockade.nft.ir import NamedSet, Ruleset

DEFAULT_MIN_TTL = 60      # seconds: stub resolvers and runtimes cache a little beyond the TTL
DEFAULT_MAX_TTL = 86_400  # a day: an answer never opens an address for longer
MAX_NAMES = 50_000        # names kept; the oldest to expire go first beyond it


@dataclass(frozen=True)
class Answer:
    """A resolver's answer as the proxy read it: the names of its CNAME chain (the question's
    name first) and the addresses at the end of it, each with the TTL of the whole chain."""

    names: tuple[str, ...]
    addresses: tuple[tuple[str, int], ...]


class LearnedNames:
    def __init__(self, min_ttl: int = DEFAULT_MIN_TTL, max_ttl: int = DEFAULT_MAX_TTL,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not 0 < min_ttl <= max_ttl:
            raise ValueError(f"FQDN TTL bounds: need 0 < min ({min_ttl}) <= max ({max_ttl})")
        self.min_ttl, self.max_ttl, self.clock = min_ttl, max_ttl, clock
        self._by_name: dict[str, dict[str, float]] = {}  # name -> address -> expiry (clock)
        self._by_set: dict[str, dict[str, float]] = {}   # taken back from the kernel: set -> address -> expiry
        self._lock = threading.Lock()
        self.answers_learned = 0

    def timeout(self, ttl: int) -> int:
        return max(self.min_ttl, min(self.max_ttl, ttl))

    def learn(self, answer: Answer, program: Ruleset | None) -> list[tuple[str, str, int]]:
        """Remember what `answer` says for the names `program`'s fqdn sets want; the elements to add
        to the kernel now: (set name, address, timeout)."""
        sets = fqdn_sets(program)
        wanted = [s for s in sets if any(matches(s.fqdn or "", n) for n in answer.names)]
        if not wanted or not answer.addresses:
            return []
        now = self.clock()
        out = []
        with self._lock:
            self.answers_learned += 1
            for name in answer.names:
                if any(matches(s.fqdn or "", name) for s in sets):
                    known = self._by_name.setdefault(normalise(name), {})
                    for ip, ttl in answer.addresses:
                        known[ip] = max(known.get(ip, 0.0), now + self.timeout(ttl))
            self._trim(now)
        for s in wanted:
            family = "ipv4_addr" if s.type == ("ipv4_addr",) else "ipv6_addr"
            for ip, ttl in answer.addresses:
                if _family(ip) == family:
                    out.append((s.name, ip, self.timeout(ttl)))
        return sorted(set(out))

    def elements_for(self, program: Ruleset | None) -> dict[str, list[tuple[str, int]]]:
        """Per fqdn set of `program`, the learned addresses still alive and their seconds left."""
        now = self.clock()
        out: dict[str, list[tuple[str, int]]] = {}
        with self._lock:
            self._trim(now)
            for s in fqdn_sets(program):
                family = "ipv4_addr" if s.type == ("ipv4_addr",) else "ipv6_addr"
                alive: dict[str, float] = {}
                for name, addresses in self._by_name.items():
                    if matches(s.fqdn or "", name):
                        for ip, expiry in addresses.items():
                            if _family(ip) == family:
                                alive[ip] = max(alive.get(ip, 0.0), expiry)
                for ip, expiry in self._by_set.get(s.name, {}).items():
                    alive[ip] = max(alive.get(ip, 0.0), expiry)
                if alive:
                    out[s.name] = sorted((ip, max(1, int(expiry - now))) for ip, expiry in alive.items())
        return out

    def remember(self, set_name: str, addresses: Iterable[tuple[str, int]]) -> None:
        """Take back what the kernel's fqdn set `set_name` still holds at start (agent restart), with
        the seconds each address has left. A set's name is fixed by its pattern (compile.sets), so
        the same set of the next program gets them back; the names are known again at the next lookup."""
        now = self.clock()
        with self._lock:
            known = self._by_set.setdefault(set_name, {})
            for ip, left in addresses:
                known[ip] = max(known.get(ip, 0.0), now + left)

    def names_of(self, ip: str) -> list[str]:
        """The learned names an address currently stands for (flow records name them)."""
        now = self.clock()
        with self._lock:
            return sorted(n for n, addrs in self._by_name.items() if addrs.get(ip, 0.0) > now)

    def counts(self) -> tuple[int, int]:
        """(names, addresses) alive now: what the metrics show."""
        now = self.clock()
        with self._lock:
            self._trim(now)
            return len(self._by_name), sum(len(a) for a in self._by_name.values())

    def _trim(self, now: float) -> None:
        for name in [n for n, addrs in self._by_name.items() if not _drop_expired(addrs, now)]:
            del self._by_name[name]
        for set_name in [n for n, addrs in self._by_set.items() if not _drop_expired(addrs, now)]:
            del self._by_set[set_name]
        if len(self._by_name) > MAX_NAMES:
            by_expiry = sorted(self._by_name, key=lambda n: max(self._by_name[n].values()))
            for name in by_expiry[:len(self._by_name) - MAX_NAMES]:
                del self._by_name[name]


# The fqdn sets of the last program asked about: every DNS answer asks, and a program (immutable)
# can hold thousands of sets; the agent applies one program at a time. Replaced as one tuple, so
# a reader in another thread sees a whole entry.
_last_index: tuple[Ruleset | None, tuple[NamedSet, ...], frozenset[str]] = (None, (), frozenset())


def _index(program: Ruleset) -> tuple[tuple[NamedSet, ...], frozenset[str]]:
    global _last_index
    cached = _last_index
    if cached[0] is not program:
        sets = tuple(s for s in program.sets if s.fqdn is not None)
        cached = _last_index = (program, sets, frozenset(s.name for s in sets))
    return cached[1], cached[2]


def fqdn_sets(program: Ruleset | None) -> tuple[NamedSet, ...]:
    return _index(program)[0] if program is not None else ()


def fqdn_set_names(program: Ruleset | None) -> frozenset[str]:
    return _index(program)[1] if program is not None else frozenset()


def _drop_expired(addresses: dict[str, float], now: float) -> bool:
    """Remove expired addresses; is any left?"""
    for ip in [ip for ip, expiry in addresses.items() if expiry <= now]:
        del addresses[ip]
    return bool(addresses)


def _family(ip: str) -> str:
    return "ipv4_addr" if ipaddress.ip_address(ip).version == 4 else "ipv6_addr"
