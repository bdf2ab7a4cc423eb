"""The guest image of a lab VM: a Debian kernel and a small busybox initramfs, built and cached.

    image = build_image(Path("/var/lib/stockade/lab/vm-image"))   # GuestImage(kernel, initramfs, key)

What goes in (all from this machine, nothing downloaded):
- the kernel: /boot/vmlinuz-<release> of Debian's `linux-image-cloud-amd64` (the newest cloud
  kernel unless `kernel_release` names one); copied into the cache, so a kernel upgrade on the
  host never changes a running lab's image underneath it;
- its modules that the guest needs and that are not built in (virtio PCI, virtio-net with its
  failover dependencies, virtio-console for the control port), in dependency order, loaded by
  /init from /etc/modules;
- Debian's `busybox-static` as every userland command, with guest/init.sh as /init and
  guest/agent.sh as /bin/stockade-agent;
- guest/probe_net.c compiled statically with gcc (busybox has no UDP client or server, and its
  ping ignores ICMP errors that the probe's verdicts need).

Invariants: the cache directory holds one subdirectory per key, the SHA-256 of every input's
bytes (kernel, modules, busybox, scripts, C source, the compiler's version), so an image is
rebuilt exactly when an input changes; a subdirectory appears complete or not at all (built
in a temporary directory, then renamed). Building never touches the network or the kernel.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from stockade.errors import LabError
from stockade.lab.vm.cpio import CpioArchive

log = logging.getLogger(__name__)

GUEST_DIR = Path(__file__).resolve().parent / "guest"
BOOT_DIR = Path("/boot")
MODULES_DIR = Path("/lib/modules")
BUSYBOX = Path("/bin/busybox")
KERNEL_FLAVOUR = "cloud-amd64"
# The guest's drivers; their dependencies are found in modules.dep.
GUEST_MODULES = ("virtio_pci", "virtio_net", "virtio_console")
FORMAT_VERSION = "1"   # bump when the layout of the initramfs changes


@dataclass(frozen=True)
class GuestImage:
    kernel: Path       # bzImage
    initramfs: Path    # newc cpio, gzip
    key: str           # the cache key (SHA-256 of the inputs)
    release: str       # the kernel release, e.g. 6.1.0-57-cloud-amd64


def find_kernel_release(boot_dir: Path = BOOT_DIR, flavour: str = KERNEL_FLAVOUR) -> str:
    """The newest installed kernel release of `flavour` that has both a vmlinuz and its modules."""
    found = []
    for vmlinuz in boot_dir.glob(f"vmlinuz-*-{flavour}"):
        release = vmlinuz.name.removeprefix("vmlinuz-")
        if (MODULES_DIR / release / "modules.dep").exists():
            found.append(release)
    if not found:
        raise LabError(f"no guest kernel: {boot_dir}/vmlinuz-*-{flavour} with modules under {MODULES_DIR} "
                       f"not found; install the Debian package linux-image-{flavour}")

    def version(release: str) -> list[int]:
        return [int(n) for n in re.findall(r"\d+", release)]

    return max(found, key=version)


def module_load_order(release: str, wanted: tuple[str, ...] = GUEST_MODULES) -> list[str]:
    """Paths (relative to /lib/modules/<release>) of `wanted` and their dependencies, dependencies
    first; modules built into the kernel are left out."""
    root = MODULES_DIR / release
    deps: dict[str, list[str]] = {}
    for line in (root / "modules.dep").read_text().splitlines():
        path, _, rest = line.partition(":")
        deps[path] = rest.split()
    by_name = {re.sub(r"\.ko(\.\w+)?$", "", Path(p).name).replace("-", "_"): p for p in deps}
    builtin_list = root / "modules.builtin"
    builtin = ({re.sub(r"\.ko$", "", Path(p).name).replace("-", "_") for p in builtin_list.read_text().split()}
               if builtin_list.exists() else set())
    order: list[str] = []

    def visit(path: str) -> None:
        if path in order:
            return
        for dep in deps.get(path, []):
            visit(dep)
        order.append(path)

    for name in wanted:
        if name in builtin:
            continue
        if name not in by_name:
            raise LabError(f"kernel {release} has no module {name} (neither built in nor in modules.dep)")
        visit(by_name[name])
    for path in order:
        if not path.endswith(".ko"):
            # Compressed modules would need the matching decompressor in the guest's insmod.
            raise LabError(f"module {path} of kernel {release} is compressed; only plain .ko is supported")
    return order


def is_static_elf(data: bytes) -> bool:
    """Is `data` a 64-bit little-endian ELF executable without a program interpreter (PT_INTERP)?
    The initramfs has no dynamic loader and no libc: a dynamic busybox (Debian's `busybox`
    package, which also installs /bin/busybox) would not even start as /init."""
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        return False
    phoff = int.from_bytes(data[32:40], "little")
    phentsize = int.from_bytes(data[54:56], "little")
    phnum = int.from_bytes(data[56:58], "little")
    for i in range(phnum):
        start = phoff + i * phentsize
        if int.from_bytes(data[start:start + 4], "little") == 3:  # PT_INTERP
            return False
    return True


def _compiler_version() -> bytes:
    try:
        return subprocess.run(["gcc", "--version"], capture_output=True, check=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError) as e:
        raise LabError(f"gcc is needed to build the guest's probe_net (Debian package gcc): {e}") from e


def _cache_key(release: str, modules: list[str]) -> str:
    digest = hashlib.sha256(f"stockade-vm-image {FORMAT_VERSION} {release}\n".encode())
    inputs = [BOOT_DIR / f"vmlinuz-{release}", BUSYBOX, *sorted(GUEST_DIR.iterdir()),
              *(MODULES_DIR / release / m for m in modules)]
    for path in inputs:
        digest.update(f"{path.name}\n".encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    digest.update(_compiler_version())
    return digest.hexdigest()


def _compile_probe_net(out: Path) -> None:
    argv = ["gcc", "-static", "-Os", "-s", "-Wall", "-o", str(out), str(GUEST_DIR / "probe_net.c")]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise LabError(f"compiling the guest's probe_net failed ({' '.join(argv)}): {done.stderr.strip()[-800:]}")


def _initramfs(release: str, modules: list[str], probe_net: bytes) -> bytes:
    archive = CpioArchive()
    for d in ("bin", "dev", "etc", "lib", "lib/modules", "proc", "sys", "tmp", "run"):
        archive.directory(d)
    # The kernel opens /dev/console before /init mounts devtmpfs.
    archive.char_device("dev/console", 5, 1)
    archive.file("bin/busybox", BUSYBOX.read_bytes(), 0o755)
    archive.symlink("bin/sh", "busybox")
    archive.file("init", (GUEST_DIR / "init.sh").read_bytes(), 0o755)
    archive.file("bin/stockade-agent", (GUEST_DIR / "agent.sh").read_bytes(), 0o755)
    archive.file("bin/probe_net", probe_net, 0o755)
    names = []
    for path in modules:
        name = Path(path).name
        archive.file(f"lib/modules/{name}", (MODULES_DIR / release / path).read_bytes())
        names.append(name)
    archive.file("etc/modules", ("\n".join(names) + "\n").encode())
    return gzip.compress(archive.to_bytes(), compresslevel=6, mtime=0)


def build_image(cache_dir: Path, kernel_release: str | None = None) -> GuestImage:
    """The guest image for this machine's kernel package, built under `cache_dir` unless a build
    with the same inputs is there already. Blocking (a few seconds when it builds)."""
    release = kernel_release or find_kernel_release()
    vmlinuz = BOOT_DIR / f"vmlinuz-{release}"
    if not vmlinuz.exists():
        raise LabError(f"guest kernel {vmlinuz} not found (install linux-image-{KERNEL_FLAVOUR})")
    if not BUSYBOX.exists() or not is_static_elf(BUSYBOX.read_bytes()):
        raise LabError(f"{BUSYBOX} is missing or not statically linked: install the Debian package "
                       f"busybox-static (it replaces the dynamic `busybox`)")
    modules = module_load_order(release)
    key = _cache_key(release, modules)
    target = cache_dir / key
    image = GuestImage(target / "vmlinuz", target / "initramfs.cpio.gz", key, release)
    if image.kernel.exists() and image.initramfs.exists():
        return image
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir, prefix=".build-") as tmp:
        work = Path(tmp)
        _compile_probe_net(work / "probe_net")
        (work / "image").mkdir()
        shutil.copyfile(vmlinuz, work / "image" / "vmlinuz")
        initramfs = _initramfs(release, modules, (work / "probe_net").read_bytes())
        (work / "image" / "initramfs.cpio.gz").write_bytes(initramfs)
        try:
            os.rename(work / "image", target)
        except OSError:
            if not image.initramfs.exists():  # not another builder that won the race
                raise
    log.info("built VM guest image %s (kernel %s, %d modules, initramfs %d KiB)",
             key[:12], release, len(modules), image.initramfs.stat().st_size // 1024)
    return image
