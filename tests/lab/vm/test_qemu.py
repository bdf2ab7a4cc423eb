"""QEMU's command line and the checks on a VM's spec (pure; the boot itself is tests/lab/test_vm.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from stockade.errors import LabError
from stockade.lab.vm.image import GuestImage
from stockade.lab.vm.qemu import VmSpec, qemu_argv

IMAGE = GuestImage(Path("/c/k/vmlinuz"), Path("/c/k/initramfs.cpio.gz"), "k", "6.1.0-0-cloud-amd64")
SPEC = VmSpec("web-1", "P-hv1", "w-web1", "52:54:00:12:34:56", ("198.18.1.10", "2001:db8:1::10"))


def _after(argv: list[str], flag: str) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv) if a == flag]


def test_one_tap_vnic_no_disk_and_the_guest_addresses_on_the_command_line() -> None:
    argv = qemu_argv(SPEC, IMAGE, Path("/run/vm"), "tcg")
    assert _after(argv, "-netdev") == ["tap,id=n0,ifname=w-web1,script=no,downscript=no"]
    assert _after(argv, "-device")[0] == "virtio-net-pci,netdev=n0,mac=52:54:00:12:34:56,romfile="
    assert not any(a in argv for a in ("-drive", "-hda", "-cdrom"))
    assert "-nographic" in argv and "-nodefaults" in argv
    assert {"stockade.ips=198.18.1.10,2001:db8:1::10", "stockade.gw4=198.18.255.1"} <= set(
        _after(argv, "-append")[0].split())
    assert _after(argv, "-m") == ["192"] and _after(argv, "-accel") == ["tcg"]
    assert _after(argv, "-kernel") == ["/c/k/vmlinuz"] and _after(argv, "-pidfile") == ["/run/vm/qemu.pid"]
    assert any("path=/run/vm/control.sock,server=on,wait=on" in c for c in _after(argv, "-chardev"))


def test_a_migration_destination_waits_on_its_incoming_socket_and_every_vm_has_qmp() -> None:
    plain = qemu_argv(SPEC, IMAGE, Path("/run/vm"), "tcg")
    assert _after(plain, "-qmp") == ["unix:/run/vm/qmp.sock,server=on,wait=off"] and "-incoming" not in plain
    dest = qemu_argv(SPEC, IMAGE, Path("/run/vm/next"), "tcg", incoming=Path("/run/vm/next/migrate.sock"))
    assert _after(dest, "-incoming") == ["unix:/run/vm/next/migrate.sock"]
    # The same machine on both ends: QEMU refuses a migration between different ones.
    strip = lambda argv: [a.replace("/run/vm/next", "/run/vm") for a in argv if a != "-incoming"]  # noqa: E731
    assert strip(dest)[:-1] == strip(plain)


def test_kvm_uses_the_host_cpu() -> None:
    argv = qemu_argv(SPEC, IMAGE, Path("/run/vm"), "kvm")
    assert _after(argv, "-accel") == ["kvm"] and _after(argv, "-cpu") == ["host"]


@pytest.mark.parametrize(("change", "field"), [
    ({"tap": "a-name-longer-than-15"}, "tap"), ({"tap": "w.web1"}, "tap"),
    ({"mac": "52:54:00:12:34"}, "mac"), ({"mac": "01:54:00:12:34:56"}, "multicast"),
    ({"ips": ("198.18.1.300",)}, "ips"), ({"gateway_v4": "fe80::1"}, "gateway_v4"),
    ({"memory_mib": 8192}, "memory_mib"), ({"name": "a b"}, "name"),
])
def test_a_bad_spec_is_refused_naming_the_field(change: dict[str, object], field: str) -> None:
    spec = VmSpec(**{**SPEC.__dict__, **change})  # type: ignore[arg-type]
    with pytest.raises(LabError, match=field):
        spec.check()
