"""How often each client may fail authentication: a token bucket per client (pure; the clock is injected).

A client starts with `burst` attempts; each failed authentication spends one, and one comes
back every `refill_seconds`. A client with none left gets 429 (with Retry-After) instead of
401 for a request without a valid token, until one comes back; requests with a valid token
spend nothing and are never refused here (see `gate`).

Clients are keyed by `client_key`: an IPv4 address; an IPv6 /64 (one host usually holds a
whole /64, so keying by address would hand it 2^64 budgets); a unix-socket peer by its process.
At most `max_clients` buckets are kept, least recently failed first out: a flood from more
addresses than that resets the budgets of the oldest — memory stays bounded either way.

Only called from the event loop (no lock).
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable

DEFAULT_BURST = 10
DEFAULT_REFILL_SECONDS = 6.0  # ten failures a minute, sustained
DEFAULT_MAX_CLIENTS = 10_000
UNIX_PEER = "unix-socket"  # the scope's client host for a unix-socket peer; its "port" is the peer's pid


@dataclass(frozen=True)
class AuthFailureLimits:
    """`burst` failed authentications in a row per client, one more every `refill_seconds`."""

    burst: int = DEFAULT_BURST
    refill_seconds: float = DEFAULT_REFILL_SECONDS
    max_clients: int = DEFAULT_MAX_CLIENTS

    def __post_init__(self) -> None:
        if self.burst < 1:
            raise ValueError("auth failure burst must be at least 1")
        if not self.refill_seconds > 0:
            raise ValueError("auth failure refill seconds must be positive")
        if self.max_clients < 1:
            raise ValueError("auth failure max clients must be at least 1")


def client_key(client: Any) -> str:
    """The rate-limit key of an ASGI scope's `client`: (host, port), or None (unix socket, no peer known)."""
    if not client:
        return "unix-socket"
    host = str(client[0])
    if host == UNIX_PEER:
        return f"{UNIX_PEER} pid {client[1]}"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return host



class FailureLimiter:
    def __init__(self, limits: AuthFailureLimits, clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key → (attempts left, at)

    def _left(self, key: str, now: float) -> float:
        found = self._buckets.get(key)
        if found is None:
            return float(self.limits.burst)
        left, at = found
        return min(float(self.limits.burst), left + (now - at) / self.limits.refill_seconds)

    def retry_after(self, key: str) -> int | None:
        """Whole seconds until `key` may try again (at least 1), or None when it may try now."""
        now = self._clock()
        left = self._left(key, now)
        if left >= 1:
            return None
        return max(1, math.ceil((1 - left) * self.limits.refill_seconds))

    def failed(self, key: str) -> bool:
        """Spend one attempt of `key`; True when that was its last (it is refused from now on)."""
        now = self._clock()
        left = max(0.0, self._left(key, now) - 1)
        self._buckets[key] = (left, now)
        self._buckets.move_to_end(key)
        while len(self._buckets) > self.limits.max_clients:
            self._buckets.popitem(last=False)
        return left < 1
