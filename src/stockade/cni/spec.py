"""The CNI protocol's fixed parts (spec 1.0): versions, error codes, the error and result JSON.

Pure. A failure is a `CniError` carrying one of the spec's well-known codes (or ours, 100 and
up); the plugin prints it as `{"cniVersion", "code", "msg", "details"}` and exits non-zero.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Sequence

CURRENT_VERSION = "1.0.0"
SUPPORTED_VERSIONS = ("0.3.0", "0.3.1", "0.4.0", "1.0.0")

# The spec's well-known error codes.
INCOMPATIBLE_VERSION = 1
UNSUPPORTED_FIELD = 2
CONTAINER_UNKNOWN = 3
INVALID_ENVIRONMENT = 4
IO_FAILURE = 5
DECODE_FAILURE = 6
INVALID_CONFIG = 7
TRY_AGAIN_LATER = 11
# Ours (the spec leaves 100 and up to plugins).
CONTROLLER_REFUSED = 100   # the controller said no (validation, rights, conflict)
WIRING_FAILED = 101        # a netlink request failed
CHECK_FAILED = 102         # CHECK found the wiring or the Workload not as ADD left them


class CniError(Exception):
    """A failure to report to the runtime: `code` from above, `msg` short, `details` the rest."""

    def __init__(self, code: int, msg: str, details: str = "") -> None:
        super().__init__(f"{msg}: {details}" if details else msg)
        self.code = code
        self.msg = msg
        self.details = details

    def to_json(self, version: str) -> str:
        body: dict[str, Any] = {"cniVersion": version, "code": self.code, "msg": self.msg}
        if self.details:
            body["details"] = self.details
        return json.dumps(body)


def version_answer() -> str:
    return json.dumps({"cniVersion": CURRENT_VERSION, "supportedVersions": list(SUPPORTED_VERSIONS)})


@dataclass(frozen=True)
class Attached:
    """What ADD made: the result's facts."""

    host_interface: str
    host_mac: str
    container_interface: str
    container_mac: str
    sandbox: str
    ips: tuple[str, ...]          # bare addresses, IPv4 first
    gateway_v4: str
    gateway_v6: str


def result_document(attached: Attached, version: str, dns: Sequence[str] = ()) -> dict[str, Any]:
    """The ADD result in the caller's spec version (0.3.x and 0.4.0 add `version` to each ip)."""
    ips = []
    for ip in attached.ips:
        v6 = ":" in ip
        entry: dict[str, Any] = {"address": f"{ip}/{128 if v6 else 32}", "interface": 1,
                                 "gateway": attached.gateway_v6 if v6 else attached.gateway_v4}
        if version != CURRENT_VERSION:
            entry["version"] = "6" if v6 else "4"
        ips.append(entry)
    routes = []
    if any(":" not in ip for ip in attached.ips):
        routes.append({"dst": "0.0.0.0/0", "gw": attached.gateway_v4})
    if any(":" in ip for ip in attached.ips):
        routes.append({"dst": "::/0", "gw": attached.gateway_v6})
    return {
        "cniVersion": version,
        "interfaces": [
            {"name": attached.host_interface, "mac": attached.host_mac},
            {"name": attached.container_interface, "mac": attached.container_mac, "sandbox": attached.sandbox},
        ],
        "ips": ips,
        "routes": routes,
        "dns": {"nameservers": list(dns)} if dns else {},
    }
