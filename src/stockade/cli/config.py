"""Where the CLI finds the controller and its credentials.

Order: `--controller`/`--token` flags, then STOCKADE_CONTROLLER/STOCKADE_TOKEN,
then the config file ($STOCKADE_CONFIG or ~/.config/stockade/config.json)
that `stockade lab up` writes. The file holds a secret: it is written 0600.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from stockade.errors import StockadeError


def config_path() -> Path:
    env = os.environ.get("STOCKADE_CONFIG")
    return Path(env) if env else Path.home() / ".config" / "stockade" / "config.json"


@dataclass(frozen=True)
class CliConfig:
    controller: str
    token: str


def write_config(controller: str, token: str, path: Path | None = None) -> Path:
    path = path or config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"controller": controller, "token": token}, f)
    return path


def load_config(controller: str | None = None, token: str | None = None) -> CliConfig:
    controller = controller or os.environ.get("STOCKADE_CONTROLLER")
    token = token or os.environ.get("STOCKADE_TOKEN")
    path = config_path()
    if (not controller or not token) and path.exists():
        data = json.loads(path.read_text())
        controller = controller or data.get("controller")
        token = token or data.get("token")
    if not controller:
        raise StockadeError(f"no controller configured: run `stockade lab up`, or pass --controller "
                            f"(config file {path} not found)")
    return CliConfig(controller, token or "")
