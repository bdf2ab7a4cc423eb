"""The plugin's commands (ADD, DEL, CHECK, VERSION) and its process entry point.

    ADD      register the Workload (IPAM gives its addresses), then wire the veth with them:
             the agent has the Workload's program before the interface carries a packet.
             A failed wiring deletes the Workload again. Result JSON on stdout.
    DEL      delete the veth, then this container's Workload; succeeds when either is gone.
    CHECK    the Workload is this container's, on this host and interface, with addresses,
             and the wiring is as ADD made it (and as `prevResult` says); else error 102.
    VERSION  the spec versions this plugin speaks.

Any failure is the spec's error JSON on stdout and exit status 1; the token is never printed.
"""

from __future__ import annotations

import json
import os
import sys
from typing import IO, Any, Mapping

from stockade.cni import config, identity as ident, registration, spec, wiring
from stockade.cni.spec import CHECK_FAILED, INVALID_CONFIG, CniError
from stockade.client import ControllerClient
from stockade.errors import StockadeError, ValidationError


def _client(conf: config.NetConf) -> ControllerClient:
    token = config.read_token(conf)
    try:
        return ControllerClient(conf.controller, token, ca=conf.ca)
    except ValidationError as e:   # a URL that does not parse
        raise CniError(INVALID_CONFIG, "invalid network configuration: controller", e.message) from None
    except StockadeError as e:     # the CA bundle does not load
        raise CniError(INVALID_CONFIG, "invalid network configuration: ca", e.message) from None


def add(conf: config.NetConf, env: config.Environment) -> dict[str, Any]:
    who = ident.identify(env, conf)
    wiring.require_netns(env.netns)   # before the controller hears of a container that is not there
    with _client(conf) as client:
        ips = registration.register(client, who, conf.host)
        try:
            attached = wiring.attach(who, env.netns, ips)
        except CniError:
            try:
                registration.unregister(client, who)
            except CniError as cleanup:
                print(f"stockade-cni: could not remove Workload {who.namespace}/{who.name} after a failed "
                      f"ADD: {cleanup}", file=sys.stderr)
            raise
    return spec.result_document(attached, conf.cni_version)


def delete(conf: config.NetConf, env: config.Environment) -> None:
    who = ident.identify(env, conf)
    wiring.detach(who)
    with _client(conf) as client:
        registration.unregister(client, who)


def _previous_ips(prev: Any) -> set[str] | None:
    if not isinstance(prev, dict) or not isinstance(prev.get("ips"), list):
        return None
    return {str(e.get("address", "")).split("/")[0] for e in prev["ips"] if isinstance(e, dict)}


def check(conf: config.NetConf, env: config.Environment, prev_result: Any) -> None:
    who = ident.identify(env, conf)
    where = f"Workload {who.namespace}/{who.name}"
    with _client(conf) as client:
        doc = registration.find(client, who)
    if doc is None:
        raise CniError(CHECK_FAILED, "check failed", f"{where} is not registered")
    problems = []
    spec_ = doc.get("spec") or {}
    if not registration.owned_by(doc, who):
        problems.append(f"{where} belongs to another container")
    for key, want in (("host", conf.host), ("interface", who.host_interface), ("mac", who.mac)):
        if spec_.get(key) != want:
            problems.append(f"{where} has spec.{key} {spec_.get(key)!r}, not {want!r}")
    ips = tuple(sorted((doc.get("status") or {}).get("ips") or (), key=lambda ip: (":" in ip, ip)))
    if not ips:
        problems.append(f"{where} has no addresses")
    previous = _previous_ips(prev_result)
    if previous is not None and previous != set(ips):
        problems.append(f"{where} has addresses {', '.join(ips)}, the previous result {', '.join(sorted(previous))}")
    problems += wiring.check(who, env.netns, ips)
    if problems:
        raise CniError(CHECK_FAILED, "check failed", "; ".join(problems))


def run(env_vars: Mapping[str, str], stdin: str, stdout: IO[str]) -> int:
    """One invocation; the exit status."""
    version = config.peek_version(stdin)
    try:
        env = config.parse_environment(env_vars)
        if env.command == "VERSION":
            stdout.write(spec.version_answer() + "\n")
            return 0
        conf = config.parse_netconf(stdin)
        if env.command == "ADD":
            stdout.write(json.dumps(add(conf, env)) + "\n")
        elif env.command == "DEL":
            delete(conf, env)
        else:
            prev = json.loads(stdin).get("prevResult")
            check(conf, env, prev)
        return 0
    except CniError as e:
        stdout.write(e.to_json(version) + "\n")
        return 1


def main() -> int:
    return run(os.environ, sys.stdin.read(), sys.stdout)
