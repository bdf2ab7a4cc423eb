"""The guest image: built from this machine's Debian packages, cached by the bytes of its inputs,
holding what the guest needs. No root or kernel needed (it reads /boot and /lib/modules)."""

from __future__ import annotations

import gzip
import shutil
import subprocess
from pathlib import Path

import pytest

from stockade.lab.vm import image as image_mod
from stockade.lab.vm.image import build_image, find_kernel_release, is_static_elf, module_load_order


def _listing(initramfs: Path) -> list[str]:
    data = gzip.decompress(initramfs.read_bytes())
    return subprocess.run(["busybox", "cpio", "-t"], input=data, capture_output=True, check=True,
                          timeout=30).stdout.decode().split()


def test_modules_come_after_their_dependencies() -> None:
    order = [Path(p).name for p in module_load_order(find_kernel_release())]
    for module in ("virtio_net.ko", "virtio_console.ko", "virtio_pci.ko"):
        assert module in order, order
    assert order.index("virtio.ko") < order.index("virtio_pci.ko") < order.index("virtio_net.ko")
    assert order.index("failover.ko") < order.index("net_failover.ko") < order.index("virtio_net.ko")
    assert len(order) == len(set(order))


def test_an_unknown_module_is_named() -> None:
    with pytest.raises(Exception, match="no_such_module_x9"):
        module_load_order(find_kernel_release(), ("no_such_module_x9",))


def test_the_initramfs_holds_init_agent_busybox_probe_and_modules(tmp_path: Path) -> None:
    built = build_image(tmp_path)
    names = _listing(built.initramfs)
    for name in ("init", "bin/busybox", "bin/sh", "bin/stockade-agent", "bin/probe_net", "dev/console",
                 "etc/modules", "lib/modules/virtio_net.ko", "lib/modules/virtio_console.ko"):
        assert name in names, names
    assert built.kernel.read_bytes() == (Path("/boot") / f"vmlinuz-{built.release}").read_bytes()
    assert is_static_elf(Path("/bin/busybox").read_bytes())


def test_an_unchanged_input_reuses_the_cache_and_a_changed_one_rebuilds(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    first = build_image(tmp_path / "cache")
    stamp = first.initramfs.stat().st_mtime_ns
    again = build_image(tmp_path / "cache")
    assert again == first and again.initramfs.stat().st_mtime_ns == stamp
    guest = tmp_path / "guest"
    shutil.copytree(image_mod.GUEST_DIR, guest)
    (guest / "agent.sh").write_text((guest / "agent.sh").read_text() + "# changed\n")
    monkeypatch.setattr(image_mod, "GUEST_DIR", guest)
    changed = build_image(tmp_path / "cache")
    assert changed.key != first.key and changed.initramfs.exists() and first.initramfs.exists()
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == sorted([first.key, changed.key])


def test_a_dynamic_executable_is_not_static() -> None:
    assert not is_static_elf(Path("/bin/ls").read_bytes())
    assert not is_static_elf(b"#!/bin/sh\n")
