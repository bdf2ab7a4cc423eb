"""The newc archive is one the kernel (and busybox cpio) reads: files, links, directories, device
nodes, byte for byte the same for the same entries. No root needed."""

from __future__ import annotations

import subprocess

import pytest

from stockade.lab.vm.cpio import CpioArchive


def _archive() -> bytes:
    archive = CpioArchive()
    archive.directory("bin")
    archive.file("bin/hello", b"#!/bin/sh\necho hi\n", 0o755)
    archive.symlink("bin/sh", "busybox")
    archive.directory("dev")
    archive.char_device("dev/console", 5, 1)
    archive.file("odd", b"abc")  # a length that needs padding
    return archive.to_bytes()


def test_busybox_cpio_lists_every_entry_with_its_kind() -> None:
    listing = subprocess.run(["busybox", "cpio", "-tv"], input=_archive(), capture_output=True,
                             check=True, timeout=10).stdout.decode()
    lines = {line.split()[-1] if "->" not in line else line.split()[-3]: line for line in listing.splitlines()}
    assert set(lines) == {"bin", "bin/hello", "bin/sh", "dev", "dev/console", "odd"}, listing
    assert lines["bin"].startswith("d") and lines["bin/hello"].startswith("-rwxr-xr-x")
    assert lines["bin/sh"].startswith("l") and lines["bin/sh"].endswith("-> busybox")
    assert lines["dev/console"].startswith("c")


def test_contents_survive_extraction() -> None:
    out = subprocess.run(["busybox", "cpio", "-i", "--to-stdout", "odd"], input=_archive(),
                         capture_output=True, check=True, timeout=10).stdout
    assert out == b"abc"


def test_same_entries_give_the_same_bytes_and_end_with_the_trailer() -> None:
    assert _archive() == _archive()
    assert b"TRAILER!!!" in _archive()[-128:]
    assert len(_archive()) % 4 == 0


def test_an_entry_added_twice_is_refused() -> None:
    archive = CpioArchive()
    archive.file("a", b"")
    with pytest.raises(ValueError, match="'a'"):
        archive.file("/a/", b"x")
