"""A lab workload as a real QEMU virtual machine: its guest image, its boot, its control channel.

    image = build_image(cache_dir)                       # image.py: kernel + busybox initramfs
    vm = start_vm(VmSpec(...), image, run_dir)           # qemu.py: QEMU in a netns, one tap vNIC
    configure_routed_tap(netns, tap, ips)                # host_side.py: the lab's routed host side
    vm.serve("tcp", 80); vm.connect(ip, "udp", 53)       # guest_client.py, control.py, guest/agent.sh
    GuestClient.open(run_dir, name)                      # the same, from another process
    vm.stop()

Part of the Lab layer. Never touches the root namespace: QEMU and its tap live in the netns
the caller names.
"""

from stockade.lab.vm.guest_client import GuestClient
from stockade.lab.vm.host_side import configure_routed_tap
from stockade.lab.vm.image import GuestImage, build_image
from stockade.lab.vm.qemu import RunningVm, VmSpec, kvm_usable, start_vm

__all__ = ["GuestClient", "GuestImage", "RunningVm", "VmSpec", "build_image", "configure_routed_tap", "kvm_usable", "start_vm"]
