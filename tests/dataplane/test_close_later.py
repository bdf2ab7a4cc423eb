"""Netfilter netlink handles are closed in the background, all of them, and never unboundedly late."""

from __future__ import annotations

import os
import subprocess
import threading
import uuid
from typing import Iterator

import pytest

from stockade.dataplane import close_later as closer
from stockade.dataplane import libnft
from stockade.dataplane.nft_driver import NftDriver
from stockade.lab import netns as ns_mod


def test_closes_run_in_the_background_in_order_and_drain_waits_for_them() -> None:
    done: list[tuple[int, int]] = []
    for i in range(5):
        closer.close_later(lambda i=i: done.append((i, threading.get_ident())))
    closer.drain()
    assert [i for i, _ in done] == [0, 1, 2, 3, 4]
    assert {tid for _, tid in done} != {threading.get_ident()}


def test_when_the_closer_is_behind_the_caller_closes_inline() -> None:
    release, holding = threading.Event(), threading.Event()
    ran_in: list[int] = []

    def hold() -> None:
        holding.set()
        release.wait(10)

    closer.close_later(hold)  # holds the closer thread, off the queue
    try:
        assert holding.wait(10)
        for _ in range(closer.MAX_PENDING):
            closer.close_later(lambda: ran_in.append(threading.get_ident()))
        assert ran_in == []  # all queued
        closer.close_later(lambda: ran_in.append(threading.get_ident()))
        assert ran_in == [threading.get_ident()]  # the one over the bound ran here, at once
    finally:
        release.set()
        closer.drain()
    assert len(ran_in) == closer.MAX_PENDING + 1


def _netlink_sockets() -> int:
    """Open NETLINK_NETFILTER sockets of this process in this thread's netns (protocol 12, by inode)."""
    inodes = set()
    with open("/proc/thread-self/net/netlink") as f:  # the calling thread's netns
        next(f)
        for line in f:
            fields = line.split()
            if fields[1] == "12":
                inodes.add(fields[-1])
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:[") and target[8:-1] in inodes:
            count += 1
    return count


@pytest.fixture
def netns_name() -> Iterator[str]:
    name = f"stkc-{uuid.uuid4().hex[:10]}"
    subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)


def test_transactions_and_generation_reads_leave_no_socket_open(netns_name: str) -> None:
    assert libnft.available()  # the agent's path: libnftables in-process, generation by netlink
    driver = NftDriver()
    table = driver.table
    add = {"nftables": [{"add": {"element": {"family": "inet", "table": table, "name": "s",
                                             "elem": ["198.18.0.1"]}}}]}
    delete = {"nftables": [{"delete": {"element": {"family": "inet", "table": table, "name": "s",
                                                   "elem": ["198.18.0.1"]}}}]}

    def inside() -> tuple[int, int, list[str]]:
        closer.drain()
        before = _netlink_sockets()
        driver.apply({"nftables": [{"add": {"table": {"family": "inet", "name": table}}},
                                   {"add": {"set": {"family": "inet", "table": table, "name": "s",
                                                    "type": "ipv4_addr"}}}]})
        for _ in range(20):
            driver.apply(add)
            driver.apply(delete)  # a delete leaves destroy work: the next close waits for it
            driver.generation()
        driver.apply(add)
        listed = driver.list_table() or {}
        closer.drain()
        elements = [e for item in listed.get("nftables", []) for e in item.get("set", {}).get("elem", [])]
        return before, _netlink_sockets(), elements

    before, after, elements = ns_mod.run_in(netns_name, inside)
    assert elements == ["198.18.0.1"]  # every transaction had committed when apply returned
    assert after == before
