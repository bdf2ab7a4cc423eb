"""The container's Workload at the controller, under the host's credential (`ControllerClient`).

The credential is an agent-role token bound to the host: it may write only Workloads on its
own host marked `stockade.io/attached-by` (`controller.rbac`), and read back the Workloads on
its own host by name (`status.ips` included): one object per read, whatever the fleet's size.

Invariants: a Workload is removed only when its `stockade.io/cni-container-id` annotation
names the container being deleted (a newer container of the same name keeps its object).
Controller errors become `CniError`s: unreachable → 11 (try again later), any refusal → 100
with the controller's message (which never holds the token).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

from stockade.cni.identity import CONTAINER_ID, Identity
from stockade.cni.spec import CONTROLLER_REFUSED, TRY_AGAIN_LATER, CniError
from stockade.client import ControllerClient
from stockade.errors import ControllerUnavailable, NotFoundError, StockadeError


@contextmanager
def controller_errors(what: str) -> Iterator[None]:
    try:
        yield
    except ControllerUnavailable as e:
        raise CniError(TRY_AGAIN_LATER, f"{what}: the controller is unreachable", e.message) from None
    except StockadeError as e:
        raise CniError(CONTROLLER_REFUSED, f"{what}: the controller refused", e.message) from None


def find(client: ControllerClient, identity: Identity) -> dict[str, Any] | None:
    """The stored Workload of this name and namespace on this host (with its status), or None.
    One object read by name: what a host credential may list (its own host's Workloads)."""
    with controller_errors(f"reading Workload {identity.namespace}/{identity.name}"):
        try:
            items = client.list("Workload", identity.namespace, identity.name)["items"]
        except NotFoundError:
            return None
    return dict(items[0]) if items else None


def owned_by(doc: dict[str, Any], identity: Identity) -> bool:
    return ((doc.get("metadata") or {}).get("annotations") or {}).get(CONTAINER_ID) == identity.container_id


def register(client: ControllerClient, identity: Identity, host: str) -> tuple[str, ...]:
    """Create or update the Workload; its addresses (IPAM's, IPv4 first)."""
    where = f"registering Workload {identity.namespace}/{identity.name}"
    with controller_errors(where):
        client.apply([identity.workload(host)], message=f"stockade-cni ADD {identity.container_id[:12]}")
    doc = find(client, identity)
    ips = tuple((doc or {}).get("status", {}).get("ips") or ())
    if doc is None or not ips:
        raise CniError(CONTROLLER_REFUSED, f"{where}: the controller gave it no addresses",
                       "does the controller have an IPv4 and an IPv6 pool?")
    return tuple(sorted(ips, key=lambda ip: (":" in ip, ip)))


def unregister(client: ControllerClient, identity: Identity) -> bool:
    """Delete the Workload if it is this container's; True when one was deleted."""
    doc = find(client, identity)
    if doc is None or not owned_by(doc, identity):
        return False
    with controller_errors(f"deleting Workload {identity.namespace}/{identity.name}"):
        client.delete([("Workload", identity.namespace, identity.name)],
                      message=f"stockade-cni DEL {identity.container_id[:12]}")
    return True
