"""Who a container is to Stockade: its Workload's name, namespace, labels, interface and MAC. Pure.

From the runtime's arguments (CNI_ARGS) and the network configuration:

- name: `K8S_POD_NAME` (Kubernetes runtimes; podman passes the container's name there), made
  a DNS label when it is not one (lowercase, other characters as `-`, and a short hash of the
  original appended so two names never meet); without it `c-` and the container id's first 12
  characters.
- namespace: `K8S_POD_NAMESPACE`, else `STOCKADE_NAMESPACE`, else the configuration's `namespace`.
- labels: the configuration's `labels` and `args.cni.labels`, then `STOCKADE_LABELS` from CNI_ARGS
  (`key=value,key=value`; podman hands its own CNI_ARGS environment variable on to plugins).
- interface (host side of the veth): `stk` and 12 hex digits of the container id and interface
  name: 15 characters, in the agent's workload naming scheme, the same on every call for one
  container, so DEL and CHECK find what ADD made.
- MAC (container side): `MAC` from CNI_ARGS or `runtimeConfig.mac` (the `mac` capability), else
  a locally administered unicast address derived from the same identity.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Mapping

from stockade.cni.config import Environment, NetConf
from stockade.cni.spec import INVALID_ENVIRONMENT, CniError
from stockade.model.naming import ATTACHED_BY

PLUGIN = "stockade-cni"
CONTAINER_ID = "stockade.io/cni-container-id"   # annotation: which container's Workload this is
CONTAINER_IFNAME = "stockade.io/cni-ifname"
_DNS_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")


@dataclass(frozen=True)
class Identity:
    name: str
    namespace: str
    labels: Mapping[str, str]
    host_interface: str
    mac: str
    container_id: str
    ifname: str

    def workload(self, host: str) -> dict[str, object]:
        """The Workload document to apply: no `spec.ips`, the controller's IPAM assigns them."""
        return {
            "apiVersion": "stockade.io/v1",
            "kind": "Workload",
            "metadata": {
                "name": self.name, "namespace": self.namespace, "labels": dict(self.labels),
                "annotations": {ATTACHED_BY: PLUGIN, CONTAINER_ID: self.container_id,
                                CONTAINER_IFNAME: self.ifname},
            },
            "spec": {"host": host, "interface": self.host_interface, "mac": self.mac},
        }


def _digest(container_id: str, ifname: str) -> str:
    return hashlib.sha256(f"{container_id}/{ifname}".encode()).hexdigest()


def host_interface(container_id: str, ifname: str) -> str:
    return "stk" + _digest(container_id, ifname)[:12]


def derived_mac(container_id: str, ifname: str) -> str:
    raw = bytes.fromhex(_digest(container_id, ifname)[12:22])
    return ":".join(f"{b:02x}" for b in (0x02,) + tuple(raw))   # 02: locally administered, unicast


def workload_name(runtime_name: str | None, container_id: str) -> str:
    if not runtime_name:
        return "c-" + re.sub(r"[^a-z0-9]", "", container_id.lower())[:12]
    if _DNS_LABEL.match(runtime_name):
        return runtime_name
    tag = hashlib.sha256(runtime_name.encode()).hexdigest()[:6]
    base = re.sub(r"[^a-z0-9-]+", "-", runtime_name.lower()).strip("-")[:63 - 7].strip("-")
    return f"{base}-{tag}" if base else f"c-{tag}"


def _labels_arg(text: str) -> dict[str, str]:
    labels: dict[str, str] = {}
    for pair in (p for p in text.split(",") if p.strip()):
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise CniError(INVALID_ENVIRONMENT, "invalid CNI_ARGS: STOCKADE_LABELS",
                           f"{pair!r} is not key=value (STOCKADE_LABELS=key=value,key=value)")
        labels[key.strip()] = value.strip()
    return labels


def _mac(env: Environment, conf: NetConf) -> str:
    given = env.args.get("MAC") or conf.runtime_config.get("mac")
    if given is None:
        return derived_mac(env.container_id, env.ifname)
    mac = str(given).lower()
    if not _MAC.match(mac) or int(mac[:2], 16) & 1:
        raise CniError(INVALID_ENVIRONMENT, "invalid MAC", f"{given!r} is not a unicast MAC like 02:00:00:00:00:01")
    return mac


def identify(env: Environment, conf: NetConf) -> Identity:
    namespace = env.args.get("K8S_POD_NAMESPACE") or env.args.get("STOCKADE_NAMESPACE") or conf.namespace
    labels = dict(conf.labels)
    labels.update(_labels_arg(env.args.get("STOCKADE_LABELS", "")))
    return Identity(
        name=workload_name(env.args.get("K8S_POD_NAME"), env.container_id),
        namespace=namespace,
        labels=labels,
        host_interface=host_interface(env.container_id, env.ifname),
        mac=_mac(env, conf),
        container_id=env.container_id,
        ifname=env.ifname,
    )
