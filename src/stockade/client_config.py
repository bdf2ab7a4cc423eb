"""Client contexts: where a user of the API finds the controller, its credentials and the CA
that vouches for it.

This sits next to the client (`stockade.client`), not in the CLI: the CLI, the lab (which
writes its "lab" context at `up`), the benchmarks and the tests all resolve a controller the
same way, and none of them should need the command line's modules to do it.

The config file ($STOCKADE_CONFIG, default ~/.config/stockade/config.json) is
shaped like a kubeconfig, in JSON:

    {"current-context": "lab",
     "contexts": {"lab": {"controller": "https://127.0.0.1:PORT", "token": "...", "ca": "/path/ca.crt"}}}

Each of controller, token and CA is resolved on its own, first found wins:

    1. the flags: --controller, --token or --token-file (and a `ca` argument from code)
    2. the environment: STOCKADE_CONTROLLER, STOCKADE_TOKEN, STOCKADE_CA
    3. the selected context of the file: STOCKADE_CONTEXT if set, else "current-context"

The flat file of earlier versions ({"controller", "token"}) still reads, as
one context named "default".

`--token` puts the secret in the process's command line, which every local user can read
in /proc; `--token-file PATH` (or `-` for standard input) does not.

Invariants: the file holds secrets, so it is written 0600 (through a
temporary file and a rename, so a reader never sees half of it) and a token is
never part of an error message or of `redacted()`.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from stockade.errors import StockadeError, ValidationError
from stockade.private_files import write_private

if TYPE_CHECKING:
    from stockade.client import ControllerClient

LEGACY_CONTEXT = "default"  # the name a flat, pre-context config file reads as
REDACTED = "REDACTED"


def config_path() -> Path:
    env = os.environ.get("STOCKADE_CONFIG")
    return Path(env) if env else Path.home() / ".config" / "stockade" / "config.json"


@dataclass(frozen=True)
class Context:
    """One controller and how to talk to it."""

    controller: str
    token: str = ""
    ca: str | None = None

    def to_json(self) -> dict[str, str]:
        out = {"controller": self.controller, "token": self.token}
        if self.ca:
            out["ca"] = self.ca
        return out


@dataclass
class ConfigFile:
    """The whole file: named contexts and which one is current."""

    contexts: dict[str, Context] = field(default_factory=dict)
    current_context: str | None = None
    legacy: bool = False  # read from the flat format; written back in the new one

    @classmethod
    def read(cls, path: Path | None = None) -> "ConfigFile":
        """The file at `path` (default: config_path()); empty when there is none."""
        path = path or config_path()
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError:
            return cls()
        except (OSError, ValueError) as e:
            raise StockadeError(f"cannot read the CLI config {path}: {e}") from None
        if not isinstance(raw, dict):
            raise StockadeError(f"the CLI config {path} is not a JSON object")
        if "contexts" not in raw and "controller" in raw:
            return cls({LEGACY_CONTEXT: _context(path, LEGACY_CONTEXT, raw)}, LEGACY_CONTEXT, legacy=True)
        contexts = raw.get("contexts") or {}
        if not isinstance(contexts, dict):
            raise StockadeError(f"the CLI config {path}: `contexts` is not an object")
        current = raw.get("current-context")
        return cls({str(name): _context(path, str(name), c) for name, c in contexts.items()},
                   str(current) if current else None)

    def write(self, path: Path | None = None) -> Path:
        """Write 0600, or delete the file when no context is left."""
        path = path or config_path()
        if not self.contexts:
            path.unlink(missing_ok=True)
            return path
        data = {"current-context": self.current_context,
                "contexts": {name: c.to_json() for name, c in sorted(self.contexts.items())}}
        write_private(path, json.dumps(data, indent=2) + "\n")
        return path

    def redacted(self) -> dict[str, Any]:
        """The file as `stockade config view` shows it: every token replaced."""
        contexts = {name: {**c.to_json(), "token": REDACTED if c.token else ""}
                    for name, c in sorted(self.contexts.items())}
        return {"current-context": self.current_context, "contexts": contexts}


def _context(path: Path, name: str, raw: Any) -> Context:
    if not isinstance(raw, dict) or not isinstance(raw.get("controller"), str) or not raw["controller"]:
        raise StockadeError(f"the CLI config {path}: context {name!r} needs a `controller` URL")
    token, ca = raw.get("token") or "", raw.get("ca") or None
    if not isinstance(token, str) or not (ca is None or isinstance(ca, str)):
        raise StockadeError(f"the CLI config {path}: context {name!r}: `token` and `ca` are strings")
    return Context(raw["controller"], token, ca)




TOKEN_PREFIX = "stk_"  # as `controller.auth` makes them
TOKEN_ID_LENGTH = 12


def read_token(token: str | None, token_file: str | None, stdin: TextIO | None = None) -> str | None:
    """The token from --token or --token-file (`-`: standard input); None when neither is given.

    The file holds the token alone (surrounding whitespace is ignored). Errors name the file,
    never its content.
    """
    if token_file is None:
        return token
    if token:
        raise ValidationError.single("", "--token-file", "give --token or --token-file, not both")
    source = "standard input" if token_file == "-" else token_file
    try:
        text = (stdin or sys.stdin).read() if token_file == "-" else Path(token_file).read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise ValidationError.single(source, "--token-file", f"cannot read it: "
                                     f"{e.strerror if isinstance(e, OSError) else 'not text'}") from None
    value = text.strip()
    if not value:
        raise ValidationError.single(source, "--token-file", "holds no token")
    if any(c.isspace() for c in value):
        raise ValidationError.single(source, "--token-file", "must hold one token alone")
    return value


def revocation_ref(ref: str) -> str:
    """What `token revoke` sends: a token in hand becomes its public id (the first 12 hex digits
    of its SHA-256, as `token list` shows it), so the secret never travels or lands in a log."""
    ref = ref.strip()
    if ref.startswith(TOKEN_PREFIX):
        return hashlib.sha256(ref.encode()).hexdigest()[:TOKEN_ID_LENGTH]
    return ref


@dataclass(frozen=True)
class ResolvedContext:
    """What one client uses: controller, token and CA, resolved from flags, environment and file."""

    controller: str
    token: str
    ca: str | None = None
    context: str | None = None  # the file's context it came from, if any

    def client(self, timeout: float | None = None) -> "ControllerClient":
        from stockade.client import DEFAULT_TIMEOUT, ControllerClient

        return ControllerClient(self.controller, self.token, timeout or DEFAULT_TIMEOUT, ca=self.ca)


def load_config(controller: str | None = None, token: str | None = None, ca: str | None = None,
                context: str | None = None, path: Path | None = None) -> ResolvedContext:
    """Resolve controller, token and CA: arguments, then environment, then the file's context."""
    path = path or config_path()
    controller = controller or os.environ.get("STOCKADE_CONTROLLER")
    token = token or os.environ.get("STOCKADE_TOKEN")
    ca = ca or os.environ.get("STOCKADE_CA")
    wanted = context or os.environ.get("STOCKADE_CONTEXT")
    chosen: str | None = None
    if not (controller and token and ca) or wanted:
        cfg = ConfigFile.read(path)
        chosen = wanted or cfg.current_context
        if wanted and wanted not in cfg.contexts:
            raise StockadeError(f"no context {wanted!r} in the CLI config {path} (contexts: "
                                f"{', '.join(sorted(cfg.contexts)) or 'none'})")
        found = cfg.contexts.get(chosen) if chosen else None
        if found is not None:
            controller = controller or found.controller
            token = token or found.token
            ca = ca or found.ca
        else:
            chosen = None
    if not controller:
        raise StockadeError(f"no controller configured: run `stockade lab up`, pass --controller, or choose a "
                            f"context with `stockade config use-context` (config file {path})")
    return ResolvedContext(controller, token or "", ca, chosen)


def context_from_file(path: Path | None = None, context: str | None = None) -> Context:
    """Context `context` (default: the current one) of the file alone. The environment is ignored on
    purpose: a test reading its own lab's file must not pick up the caller's STOCKADE_TOKEN."""
    path = path or config_path()
    cfg = ConfigFile.read(path)
    name = context or cfg.current_context
    found = cfg.contexts.get(name) if name else None
    if found is None:
        raise StockadeError(f"no context {name!r} in the CLI config {path} "
                            f"(contexts: {', '.join(sorted(cfg.contexts)) or 'none'})")
    return found


def client_from_config(path: Path | None = None, context: str | None = None,
                       timeout: float | None = None) -> "ControllerClient":
    """A client for one context of the config file at `path` (e.g. the one a lab wrote): its
    controller, token and CA, nothing from flags or environment."""
    found = context_from_file(path, context)
    return ResolvedContext(found.controller, found.token, found.ca, context).client(timeout)


def set_context(name: str, context: Context, path: Path | None = None, *, make_current: bool = True) -> Path:
    """Add or replace context `name`, keeping every other one; make it current unless told not to."""
    cfg = ConfigFile.read(path)
    cfg.contexts[name] = context
    if make_current or cfg.current_context is None:
        cfg.current_context = name
    return cfg.write(path)


def remove_context(name: str, path: Path | None = None, *, only_if: Context | None = None) -> bool:
    """Remove context `name` (only when it still equals `only_if`, if given); delete the file when it
    was the last one. True when something was removed."""
    cfg = ConfigFile.read(path)
    found = cfg.contexts.get(name)
    if found is None or (only_if is not None and found != only_if):
        return False
    del cfg.contexts[name]
    if cfg.current_context == name:
        # Leave no dangling pointer; with exactly one context left, that one is the obvious choice.
        cfg.current_context = next(iter(cfg.contexts)) if len(cfg.contexts) == 1 else None
    cfg.write(path)
    return True


def write_config(controller: str, token: str, path: Path | None = None, *, ca: str | None = None,
                 context: str = LEGACY_CONTEXT) -> Path:
    """Set one context (default "default") and make it current; other contexts are kept."""
    return set_context(context, Context(controller, token, ca), path)

