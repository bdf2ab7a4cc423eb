"""Boot a lab VM: QEMU in a network namespace, one tap vNIC, the guest image, a control channel.

    vm = start_vm(VmSpec("web-1", netns="P-hv1", tap="w-web1", mac="52:54:00:12:34:56",
                         ips=("198.18.1.10", "2001:db8:1::10")), image, run_dir)
    vm.connect("198.18.2.20", "tcp", 8080)      # -> ProbeResult, as `stockade.lab.probe` gives
    with vm.serving("udp", 53): ...             # a probe server inside the guest
    vm.release_control()                        # another process may now GuestClient.open(run_dir)
    vm.stop()

QEMU runs inside `spec.netns` (nsenter --net; nsenter execs it, so the Popen pid is QEMU's and
is written to run_dir/qemu.pid). Its one vNIC is the tap `spec.tap` of that namespace (QEMU
creates it, or opens it if it exists; a tap QEMU created disappears when QEMU exits), a
virtio-net device with `spec.mac`. No disk: the kernel and initramfs of `image`; the guest's
addresses go on the kernel command line (guest/init.sh configures eth0 as the lab configures
a routed namespace workload). The console is logged to run_dir/console.log; the control
channel is a virtio-serial port on run_dir/control.sock. KVM when /dev/kvm can create a VM,
TCG otherwise (logged either way).

The host side of the tap (up, fe80::1/64, routes to the guest's addresses) is not made here:
see `host_side.configure_routed_tap`; the VM boots without it.

Invariants: `start_vm` returns only once the guest agent said "ready", or raises after
stopping QEMU; `stop` ends QEMU (SIGTERM, then SIGKILL), reaps it and removes the socket and
pid file, whatever state the guest is in; it may be called more than once.
"""

from __future__ import annotations

import fcntl
import ipaddress
import logging
import os
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from stockade.errors import LabError
from stockade.lab import naming
from stockade.lab import netns as ns
from stockade.lab.vm.control import ControlChannel
from stockade.lab.vm.guest_client import GuestClient
from stockade.lab.vm.image import GuestImage

log = logging.getLogger(__name__)

QEMU = "qemu-system-x86_64"
CONTROL_PORT_NAME = "stockade.control"
KVM_DEVICE = Path("/dev/kvm")
_KVM_GET_API_VERSION = 0xAE00
_KVM_CREATE_VM = 0xAE01
_SUN_PATH_MAX = 107
_MAC = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")
_IFNAME = re.compile(r"[A-Za-z0-9_-]{1,15}")
# A guest that boots under KVM is ready in a second or two; a KVM that hangs is given this long.
KVM_TRIAL_TIMEOUT = 15.0
# Whether KVM booted a guest in this process: None until tried (a process-wide fact of the host).
_kvm_boots: bool | None = None
Accel = Literal["kvm", "tcg"]


def kvm_usable(device: Path = KVM_DEVICE) -> bool:
    """Can this process create a KVM virtual machine? (Opening /dev/kvm is not enough: a nested
    or restricted host can refuse KVM_CREATE_VM.)"""
    try:
        fd = os.open(device, os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        if fcntl.ioctl(fd, _KVM_GET_API_VERSION) != 12:
            return False
        vm_fd = fcntl.ioctl(fd, _KVM_CREATE_VM, 0)
        os.close(vm_fd)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


@dataclass(frozen=True)
class VmSpec:
    name: str                  # for logs and QEMU's -name
    netns: str                 # where QEMU runs and the tap lives
    tap: str                   # the vNIC's host side
    mac: str                   # the guest's eth0
    ips: tuple[str, ...]       # each becomes /32 or /128 on the guest's eth0
    memory_mib: int = 192
    cpus: int = 1
    # The guest's on-link IPv4 gateway: the lab's 198.18.255.1 (on the hypervisor's lo), or
    # 169.254.1.1 when the agent plumbs the tap as an attached interface (dataplane/attach.py).
    gateway_v4: str = naming.GATEWAY_V4

    def check(self) -> None:
        what = f"VM {self.name!r}"
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", self.name):
            raise LabError(f"{what}: name must be 1-64 letters, digits or '_.-'")
        if not _IFNAME.fullmatch(self.tap):
            raise LabError(f"{what}: tap {self.tap!r} is not an interface name (at most 15 of letters, digits, '_-')")
        if not _MAC.fullmatch(self.mac):
            raise LabError(f"{what}: mac {self.mac!r} is not a lower-case MAC address like 52:54:00:12:34:56")
        if int(self.mac[:2], 16) & 1:
            raise LabError(f"{what}: mac {self.mac} is a multicast address")
        for ip in self.ips:
            try:
                ipaddress.ip_address(ip)
            except ValueError:
                raise LabError(f"{what}: ips: {ip!r} is not an IP address") from None
        try:
            if ipaddress.ip_address(self.gateway_v4).version != 4:
                raise ValueError
        except ValueError:
            raise LabError(f"{what}: gateway_v4 {self.gateway_v4!r} is not an IPv4 address") from None
        if not 64 <= self.memory_mib <= 4096:
            raise LabError(f"{what}: memory_mib must be 64-4096, not {self.memory_mib}")
        if not 1 <= self.cpus <= 4:
            raise LabError(f"{what}: cpus must be 1-4, not {self.cpus}")


def qemu_argv(spec: VmSpec, image: GuestImage, run_dir: Path, accel: Accel,
              incoming: Path | None = None) -> list[str]:
    """QEMU's command line (without the nsenter in front). Pure. `incoming`: the unix socket this
    QEMU waits on for a running guest's state (the destination of a live migration, `migrate.py`)."""
    append = " ".join([
        "console=ttyS0", "quiet", "panic=-1", "net.ifnames=0",
        f"stockade.ips={','.join(spec.ips)}", f"stockade.gw4={spec.gateway_v4}",
        f"stockade.port={CONTROL_PORT_NAME}",
    ])
    cpu = ["-accel", "kvm", "-cpu", "host"] if accel == "kvm" else ["-accel", "tcg", "-cpu", "max"]
    return [
        QEMU, "-name", f"stockade-{spec.name}", "-machine", "pc", *cpu,
        "-m", str(spec.memory_mib), "-smp", str(spec.cpus),
        "-nodefaults", "-no-user-config", "-nographic", "-no-reboot",
        "-serial", f"file:{run_dir / 'console.log'}", "-monitor", "none",
        "-kernel", str(image.kernel), "-initrd", str(image.initramfs), "-append", append,
        "-netdev", f"tap,id=n0,ifname={spec.tap},script=no,downscript=no",
        # romfile=: no iPXE option ROM, the guest never boots from the network.
        "-device", f"virtio-net-pci,netdev=n0,mac={spec.mac},romfile=",
        "-device", "virtio-serial-pci,id=vser0",
        # wait=on: QEMU starts the guest only once the host end is connected, so the guest's
        # first "ready" cannot be written into a port nobody reads.
        "-chardev", f"socket,id=ctl,path={run_dir / 'control.sock'},server=on,wait=on",
        "-device", f"virtserialport,bus=vser0.0,chardev=ctl,name={CONTROL_PORT_NAME}",
        "-pidfile", str(run_dir / "qemu.pid"),
        # QMP, for a live migration's commands (migrate, query-migrate, quit); nothing else uses it.
        "-qmp", f"unix:{run_dir / 'qmp.sock'},server=on,wait=off",
        *(["-incoming", f"unix:{incoming}"] if incoming is not None else []),
    ]


class RunningVm(GuestClient):
    """A VM this process started: what `GuestClient` does, plus its QEMU process."""

    def __init__(self, spec: VmSpec, proc: subprocess.Popen[bytes], accel: Accel, run_dir: Path,
                 boot_seconds: float, control: ControlChannel) -> None:
        super().__init__(control, spec.name)
        self.spec = spec
        self.pid = proc.pid
        self.accel = accel
        self.run_dir = run_dir
        self.boot_seconds = boot_seconds   # from starting QEMU to the guest agent's "ready"
        self._proc = proc

    def __repr__(self) -> str:
        return (f"RunningVm(name={self.spec.name!r}, pid={self.pid}, accel={self.accel!r}, "
                f"boot_seconds={self.boot_seconds}, run_dir={str(self.run_dir)!r})")

    @property
    def console_log(self) -> Path:
        return self.run_dir / "console.log"

    @property
    def running(self) -> bool:
        return self._proc.poll() is None

    def release_control(self) -> None:
        """Let go of the control channel so that another process can `GuestClient.open` it (QEMU
        serves one client at a time). QEMU keeps running; `stop` still ends it."""
        self.close()

    def retake_control(self, timeout: float = 10.0) -> None:
        """Connect again after `release_control` (once the other client has let go)."""
        self._control = GuestClient.open(self.run_dir, self.spec.name, timeout)._control

    def stop(self, timeout: float = 5.0) -> None:
        """End QEMU and remove its socket and pid file (console.log and qemu.log stay, for
        reading after the fact). Idempotent."""
        self.close()
        _end(self._proc, timeout)
        for name in ("control.sock", "qmp.sock", "qemu.pid"):
            (self.run_dir / name).unlink(missing_ok=True)


def _end(proc: subprocess.Popen[bytes], timeout: float) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout)


def start_vm(spec: VmSpec, image: GuestImage, run_dir: Path, accel: Accel | None = None,
             ready_timeout: float = 60.0) -> RunningVm:
    """Boot `spec` from `image` in `spec.netns`; returns once the guest agent is ready.

    `run_dir` (created if missing) holds the control socket, pid file, console log and QEMU's log (qemu.log); its
    path must be short enough for a unix socket. `accel` None tries KVM (when /dev/kvm can
    create a VM and no earlier boot of this process found KVM broken) and falls back to TCG:
    a /dev/kvm that creates VMs is not proof that a guest runs (in a nested hypervisor QEMU
    may abort on an MSR or the guest hang), so the trial is a real boot with a short deadline.
    Blocking: seconds with KVM, more with TCG.
    """
    global _kvm_boots
    spec.check()
    if not ns.exists(spec.netns):
        raise LabError(f"VM {spec.name!r}: network namespace {spec.netns} does not exist")
    run_dir.mkdir(parents=True, exist_ok=True)
    if len(str(run_dir / "control.sock")) > _SUN_PATH_MAX:
        raise LabError(f"VM {spec.name!r}: run_dir {run_dir} is too long for a unix socket path")
    if accel is not None:
        return _boot(spec, image, run_dir, accel, ready_timeout)
    if _kvm_boots is not False and kvm_usable():
        try:
            vm = _boot(spec, image, run_dir, "kvm", min(ready_timeout, KVM_TRIAL_TIMEOUT))
            _kvm_boots = True
            return vm
        except LabError as e:
            if _kvm_boots:  # KVM booted before: this failure is the guest's, not KVM's
                raise
            _kvm_boots = False
            log.warning("VM %s: KVM is present but a guest does not boot with it (%s); "
                        "using TCG emulation from now on", spec.name, e.message[:300])
    elif _kvm_boots is False:
        log.info("VM %s: TCG emulation (an earlier guest did not boot with KVM)", spec.name)
    else:
        log.info("VM %s: KVM unusable (%s cannot create a VM): TCG emulation", spec.name, KVM_DEVICE)
    return _boot(spec, image, run_dir, "tcg", ready_timeout)


def _boot(spec: VmSpec, image: GuestImage, run_dir: Path, accel: Accel, ready_timeout: float) -> RunningVm:
    socket_path = run_dir / "control.sock"
    socket_path.unlink(missing_ok=True)
    (run_dir / "console.log").unlink(missing_ok=True)
    argv = ["nsenter", f"--net={ns.netns_path(spec.netns)}", *qemu_argv(spec, image, run_dir, accel)]
    start = time.monotonic()
    # QEMU's own messages go to a file: a pipe nobody reads could fill and stall it.
    with open(run_dir / "qemu.log", "wb") as qemu_log:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=qemu_log, start_new_session=True)
    what = f"VM {spec.name} ({accel})"
    control: ControlChannel | None = None
    try:
        deadline = start + ready_timeout
        while control is None:
            if proc.poll() is not None:
                raise LabError(f"{what}: QEMU exited with {proc.returncode}")
            try:
                control = ControlChannel.connect(socket_path, what, timeout=0.5)
            except LabError:
                if time.monotonic() > deadline:
                    raise
        control.wait_ready(max(1.0, deadline - time.monotonic()))
    except BaseException as e:
        if control is not None:
            control.close()
        _end(proc, 5.0)
        socket_path.unlink(missing_ok=True)
        (run_dir / "qemu.pid").unlink(missing_ok=True)
        if isinstance(e, LabError):
            raise LabError(f"{e.message}; QEMU said: {_tail(run_dir / 'qemu.log', 600) or '-'}; "
                           f"console: {_tail(run_dir / 'console.log')}") from e
        raise
    boot = round(time.monotonic() - start, 3)
    log.info("VM %s booted in %.2f s (%s), QEMU pid %d", spec.name, boot, accel, proc.pid)
    return RunningVm(spec, proc, accel, run_dir, boot, control)


def _tail(path: Path, chars: int = 1200) -> str:
    try:
        return path.read_text(errors="replace")[-chars:].strip()
    except OSError:
        return "(no console log)"
