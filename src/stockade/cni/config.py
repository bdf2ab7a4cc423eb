"""The plugin's inputs, checked once: the network configuration on stdin and the CNI_* environment.

Pure apart from reading the token file (`read_token`). Every problem is a `CniError` with the
spec's code (7 bad configuration, 2 unsupported field, 4 bad environment, 1 incompatible
version, 6 undecodable JSON) whose message names the field or variable.

The plugin's own fields beside the spec's (`cniVersion`, `name`, `type`):

    controller   the controller's URL, or several replicas' URLs separated by commas (required)
    ca           the CA bundle the controller's certificate is checked against (https)
    tokenFile    the file holding the host's credential: an agent-role token bound to `host` (required)
    host         this host's name, as the controller knows it (required)
    namespace    the Stockade namespace of containers the runtime names none for (default "default")
    labels       labels given to every Workload of this network ({key: value})

`args.cni.labels` (the CNI conventions' `[{"key", "value"}]`) adds labels too.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from stockade.cni.spec import (
    DECODE_FAILURE,
    INCOMPATIBLE_VERSION,
    INVALID_CONFIG,
    INVALID_ENVIRONMENT,
    SUPPORTED_VERSIONS,
    UNSUPPORTED_FIELD,
    CniError,
)

COMMANDS = ("ADD", "DEL", "CHECK", "VERSION")
PLUGIN_FIELDS = frozenset({"controller", "ca", "tokenFile", "host", "namespace", "labels"})
# What the spec and its conventions let a runtime put beside a plugin's fields; read or ignored.
SPEC_FIELDS = frozenset({"cniVersion", "name", "type", "args", "runtimeConfig", "prevResult",
                         "capabilities", "dns", "ipMasq"})
DEFAULT_NAMESPACE = "default"


@dataclass(frozen=True)
class NetConf:
    cni_version: str
    network: str
    controller: str
    token_file: Path
    host: str
    namespace: str = DEFAULT_NAMESPACE
    ca: Path | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    runtime_config: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Environment:
    command: str
    container_id: str = ""
    netns: str = ""
    ifname: str = ""
    args: Mapping[str, str] = field(default_factory=dict)   # CNI_ARGS, parsed


def _bad(fieldname: str, problem: str) -> CniError:
    return CniError(INVALID_CONFIG, f"invalid network configuration: {fieldname}", problem)


def _string(doc: Mapping[str, Any], key: str, required: bool) -> str | None:
    value = doc.get(key)
    if value is None:
        if required:
            raise _bad(key, f"{key} is required")
        return None
    if not isinstance(value, str) or not value.strip():
        raise _bad(key, f"{key} must be a non-empty string, not {value!r}")
    return value.strip()


def _labels(doc: Mapping[str, Any]) -> dict[str, str]:
    labels: dict[str, str] = {}
    given = doc.get("labels") or {}
    if not isinstance(given, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in given.items()):
        raise _bad("labels", "labels must be an object of string keys and string values")
    labels.update(given)
    args = doc.get("args") or {}
    convention = (args.get("cni") or {}).get("labels") if isinstance(args, dict) else None
    if convention is not None:
        if not isinstance(convention, list):
            raise _bad("args.cni.labels", "must be a list of {\"key\", \"value\"}")
        for i, entry in enumerate(convention):
            if not (isinstance(entry, dict) and isinstance(entry.get("key"), str)
                    and isinstance(entry.get("value"), str)):
                raise _bad(f"args.cni.labels[{i}]", f"must be {{\"key\": string, \"value\": string}}, not {entry!r}")
            labels[entry["key"]] = entry["value"]
    return labels


def parse_netconf(text: str | bytes) -> NetConf:
    """The plugin configuration a runtime writes on stdin."""
    try:
        doc = json.loads(text)
    except ValueError as e:
        raise CniError(DECODE_FAILURE, "the network configuration on stdin is not JSON", str(e)) from None
    if not isinstance(doc, dict):
        raise CniError(DECODE_FAILURE, "the network configuration on stdin is not a JSON object")
    version = _string(doc, "cniVersion", True)
    assert version is not None
    if version not in SUPPORTED_VERSIONS:
        raise CniError(INCOMPATIBLE_VERSION, f"cniVersion {version} is not supported",
                       f"supported: {', '.join(SUPPORTED_VERSIONS)}")
    if "ipam" in doc:
        raise CniError(UNSUPPORTED_FIELD, "unsupported field: ipam",
                       "stockade-cni takes addresses from the Stockade controller's IPAM; remove ipam")
    unknown = sorted(set(doc) - PLUGIN_FIELDS - SPEC_FIELDS)
    if unknown:
        raise CniError(UNSUPPORTED_FIELD, f"unsupported field: {unknown[0]}",
                       f"stockade-cni knows {', '.join(sorted(PLUGIN_FIELDS))} besides the spec's fields")
    network = _string(doc, "name", True)
    controller = _string(doc, "controller", True)
    token_file = _string(doc, "tokenFile", True)
    host = _string(doc, "host", True)
    ca = _string(doc, "ca", False)
    runtime = doc.get("runtimeConfig") or {}
    if not isinstance(runtime, dict):
        raise _bad("runtimeConfig", "must be an object")
    assert network and controller and token_file and host
    return NetConf(cni_version=version, network=network, controller=controller, token_file=Path(token_file),
                   host=host, namespace=_string(doc, "namespace", False) or DEFAULT_NAMESPACE,
                   ca=Path(ca) if ca else None, labels=_labels(doc), runtime_config=runtime)


def peek_version(text: str | bytes) -> str:
    """The configuration's cniVersion when it can be read (for an error's own cniVersion)."""
    try:
        doc = json.loads(text)
        version = doc.get("cniVersion") if isinstance(doc, dict) else None
        return version if isinstance(version, str) and version in SUPPORTED_VERSIONS else "1.0.0"
    except ValueError:
        return "1.0.0"


def parse_cni_args(text: str) -> dict[str, str]:
    """CNI_ARGS: `KEY=VALUE;KEY=VALUE` (a value may hold `=`)."""
    out: dict[str, str] = {}
    for i, pair in enumerate(p for p in text.split(";") if p.strip()):
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise CniError(INVALID_ENVIRONMENT, "invalid CNI_ARGS", f"pair {i} {pair!r} is not KEY=VALUE")
        out[key.strip()] = value.strip()
    return out


def parse_environment(env: Mapping[str, str]) -> Environment:
    """The CNI_* variables; which are required depends on the command (DEL may lack a netns)."""
    command = env.get("CNI_COMMAND", "")
    if command not in COMMANDS:
        raise CniError(INVALID_ENVIRONMENT, "invalid CNI_COMMAND",
                       f"{command!r} is not one of {', '.join(COMMANDS)}" if command else "CNI_COMMAND is not set")
    if command == "VERSION":
        return Environment(command)
    required = ("CNI_CONTAINERID", "CNI_IFNAME") + (("CNI_NETNS",) if command != "DEL" else ())
    for name in required:
        if not env.get(name):
            raise CniError(INVALID_ENVIRONMENT, f"missing {name}", f"{command} needs {name}")
    ifname = env["CNI_IFNAME"]
    if len(ifname) > 15 or "/" in ifname or ifname in (".", ".."):
        raise CniError(INVALID_ENVIRONMENT, "invalid CNI_IFNAME", f"{ifname!r} is not an interface name")
    return Environment(command, container_id=env["CNI_CONTAINERID"], netns=env.get("CNI_NETNS", ""),
                       ifname=ifname, args=parse_cni_args(env.get("CNI_ARGS", "")))


def read_token(conf: NetConf) -> str:
    """The host credential from `tokenFile`; never put into a message."""
    try:
        token = conf.token_file.read_text().strip()
    except OSError as e:
        raise _bad("tokenFile", f"cannot read {conf.token_file}: {e.strerror or e}") from None
    if not token:
        raise _bad("tokenFile", f"{conf.token_file} is empty")
    return token
