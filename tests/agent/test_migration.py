"""The agent's side of a live migration, without a kernel: which workloads left or arrived
between two enforced states (pure), and the order of the carrier's steps with the kernel and
controller steps given as plain functions. The kernel path itself runs in
tests/dataplane/test_conntrack_transfer.py and tests/e2e/test_live_migration.py."""

from __future__ import annotations

from typing import Any

from stockade.agent.migration import ConnectionCarrier, moves
from stockade.dataplane.conntrack_transfer import ConnectionState
from stockade.errors import NotFoundError
from stockade.model.kinds import parse_object
from stockade.model.state import DesiredState


def state(revision: int, **hosts: str) -> DesiredState:
    docs = [{"apiVersion": "stockade.io/v1", "kind": "Namespace", "metadata": {"name": "ns"}}]
    docs += [{"apiVersion": "stockade.io/v1", "kind": "Workload", "metadata": {"name": name, "namespace": "ns"},
              "spec": {"host": host, "ips": [f"198.18.40.{i + 1}"]}} for i, (name, host) in enumerate(sorted(hosts.items()))]
    return DesiredState.from_objects(revision, [parse_object(d) for d in docs])


def conn(src: str, dst: str) -> ConnectionState:
    return ConnectionState("ipv4", "tcp", src, dst, 1, 2, dst, src, 2, 1, "ESTABLISHED", 100, True, True)


def test_moves_are_seen_from_each_host() -> None:
    before, after = state(1, a="hv1", b="hv1", c="hv2"), state(2, a="hv2", b="hv1", c="hv3")
    assert moves(before, after, "hv1").left == ("ns/a",) and moves(before, after, "hv1").arrived == ()
    assert moves(before, after, "hv2").arrived == ("ns/a",) and moves(before, after, "hv2").left == ("ns/c",)
    assert moves(before, after, "hv3").arrived == ("ns/c",)
    assert moves(None, after, "hv2").arrived == ()  # a starting agent saw no move


class Controller:
    def __init__(self) -> None:
        self.given: list[tuple[str, str, int, list[dict[str, Any]]]] = []
        self.asked = 0

    def give_connections(self, namespace: str, name: str, revision: int, entries: list[dict[str, Any]]) -> None:
        self.given.append((namespace, name, revision, entries))

    def take_connections(self, namespace: str, name: str) -> dict[str, Any]:
        self.asked += 1
        if not self.given or self.asked < 3:
            raise NotFoundError("not yet")
        _, _, revision, entries = self.given[-1]
        return {"from": "hv1", "revision": revision, "entries": entries}


def test_the_host_it_left_exports_gives_then_forgets_all_but_what_a_staying_workload_needs() -> None:
    steps: list[str] = []
    controller = Controller()
    exported = [conn("198.18.40.9", "198.18.40.1"), conn("198.18.40.2", "198.18.40.1")]
    removed: list[ConnectionState] = []

    def export(ips: Any) -> list[ConnectionState]:
        steps.append(f"export {sorted(ips)}")
        return exported

    def remove(entries: Any) -> int:
        steps.append("remove")
        removed.extend(entries)
        return len(removed)

    carrier = ConnectionCarrier(controller, export=export, remove=remove)
    after = state(7, a="hv2", b="hv1")
    assert carrier.hand_off(after, "ns/a", staying={"198.18.40.2"}) == 2
    assert steps == ["export ['198.18.40.1']", "remove"]
    assert controller.given == [("ns", "a", 7, [e.to_dict() for e in exported])]
    assert removed == [exported[0]]  # the connection with b, still here, stays


def test_the_host_it_arrived_at_waits_for_this_moves_handoff_then_imports() -> None:
    controller = Controller()
    imported: list[ConnectionState] = []
    now = [0.0]

    def import_(entries: Any) -> int:
        imported.extend(entries)
        return len(imported)

    carrier = ConnectionCarrier(controller, import_=import_, clock=lambda: now[0],
                                sleep=lambda s: now.__setitem__(0, now[0] + s))
    controller.given.append(("ns", "a", 4, [conn("198.18.40.9", "198.18.40.1").to_dict()]))  # an earlier move's
    note = carrier.take_over("ns/a", revision=7, seen_elsewhere_at=6)
    assert (note.taken, note.connections) == (False, 0)   # only an older handoff came: none of this move
    assert now[0] >= carrier.wait
    controller.given.append(("ns", "a", 7, [conn("198.18.40.9", "198.18.40.1").to_dict()]))
    note = carrier.take_over("ns/a", revision=7, seen_elsewhere_at=6)
    assert (note.taken, note.connections, note.revision) == (True, 1, 7)
    assert imported == [conn("198.18.40.9", "198.18.40.1")]
