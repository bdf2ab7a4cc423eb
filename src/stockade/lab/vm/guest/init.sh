#!/bin/sh
# /init of a Stockade lab VM (busybox sh, PID 1). Mounts the kernel's file systems, loads the
# virtio modules listed in /etc/modules (in dependency order), configures eth0 from the kernel
# command line as the lab's routed workloads are configured (each address /32 or /128, routes
# to the IPv4 gateway and fe80::1), then runs the guest agent on the control port forever.
#   stockade.ips=IP[,IP...]   the workload's addresses (IPv4 and/or IPv6)
#   stockade.gw4=IP           the on-link IPv4 gateway (default 198.18.255.1, the lab's)
#   stockade.port=NAME        the virtio-serial port the agent speaks on
/bin/busybox --install -s /bin
export PATH=/bin
mkdir -p /proc /sys /dev /tmp /run
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for module in $(cat /etc/modules); do
    insmod "/lib/modules/$module" || echo "init: cannot load $module"
done

ips=""
gw4="198.18.255.1"
port="stockade.control"
for word in $(cat /proc/cmdline); do
    case "$word" in
        stockade.ips=*) ips=$(echo "${word#stockade.ips=}" | tr ',' ' ') ;;
        stockade.gw4=*) gw4="${word#stockade.gw4=}" ;;
        stockade.port=*) port="${word#stockade.port=}" ;;
    esac
done

# Root may open ICMP echo sockets (probe_net's ping); no DAD, so an address is usable at once.
sysctl -qw net.ipv4.ping_group_range="0 2147483647"
sysctl -qw net.ipv6.conf.all.accept_dad=0
sysctl -qw net.ipv6.conf.default.accept_dad=0
sysctl -qw net.ipv6.conf.eth0.accept_dad=0
sysctl -qw net.ipv6.conf.eth0.accept_ra=0
ip link set lo up
ip link set eth0 up
for ip in $ips; do
    case "$ip" in
        *:*) ip -6 addr add "$ip/128" dev eth0 ;;
        *) ip addr add "$ip/32" dev eth0 ;;
    esac
done
ip route add "$gw4/32" dev eth0 scope link
ip route add default via "$gw4" dev eth0
ip -6 route add default via fe80::1 dev eth0
echo "init: eth0 $(cat /sys/class/net/eth0/address) ips: $ips"

device=""
for p in /sys/class/virtio-ports/*; do
    [ "$(cat "$p/name" 2>/dev/null)" = "$port" ] && device="/dev/${p##*/}"
done
if [ -z "$device" ]; then
    echo "init: no virtio-serial port named $port"
    poweroff -f
fi
echo "init: guest agent on $device"
while true; do
    /bin/stockade-agent "$device"
    sleep 1
done
