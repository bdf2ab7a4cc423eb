"""A newc ("SVR4 with no CRC") cpio archive, as the Linux kernel unpacks an initramfs. Pure.

    archive = CpioArchive()
    archive.directory("bin"); archive.file("bin/busybox", data, mode=0o755)
    archive.symlink("bin/sh", "busybox"); archive.char_device("dev/console", 5, 1)
    blob = archive.to_bytes()          # ends with the TRAILER!!! entry

Invariant: the output depends only on the entries added, in order — every mtime is 0, owners
are root, inode numbers count up — so the same inputs give the same bytes (and the image cache
key can be trusted). Written here rather than calling `cpio`, so that device nodes need no
mknod on the host and no extra package is needed.
"""

from __future__ import annotations

import stat
from dataclasses import dataclass, field

_MAGIC = b"070701"


def _pad4(n: int) -> bytes:
    return b"\0" * (-n % 4)


@dataclass
class CpioArchive:
    _chunks: list[bytes] = field(default_factory=list)
    _names: set[str] = field(default_factory=set)
    _next_ino: int = 1

    def _entry(self, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0),
               nlink: int = 1) -> None:
        name = name.strip("/")
        if not name or name in self._names:
            raise ValueError(f"cpio entry {name!r}: empty or added twice")
        self._names.add(name)
        encoded = name.encode() + b"\0"
        fields = (self._next_ino, mode, 0, 0, nlink, 0, len(data), 0, 0, rdev[0], rdev[1], len(encoded), 0)
        self._next_ino += 1
        header = _MAGIC + b"".join(f"{v:08x}".encode() for v in fields)
        self._chunks += [header, encoded, _pad4(len(header) + len(encoded)), data, _pad4(len(data))]

    def directory(self, name: str, mode: int = 0o755) -> None:
        self._entry(name, stat.S_IFDIR | mode, nlink=2)

    def file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        self._entry(name, stat.S_IFREG | mode, data)

    def symlink(self, name: str, target: str) -> None:
        self._entry(name, stat.S_IFLNK | 0o777, target.encode())

    def char_device(self, name: str, major: int, minor: int, mode: int = 0o600) -> None:
        self._entry(name, stat.S_IFCHR | mode, rdev=(major, minor))

    def to_bytes(self) -> bytes:
        trailer = CpioArchive(_next_ino=0)
        trailer._entry("TRAILER!!!", 0)
        return b"".join(self._chunks + trailer._chunks)
