"""The CLI config's "lab" context: `up` makes it current, `down` removes it.

    write_cli_config(settings, record, token)   the "lab" context (admin token, the lab CA), made current
    remove_cli_config(settings, record)         remove it again; whether anything was removed

Invariants:
- Only the context named CLI_CONTEXT (or the flat file an earlier `lab up` wrote) is ever
  written or removed, and removed only while it still points at this lab; every other context
  is kept, and the file is deleted only when no context is left.
- The file is written through client_config (0600): the admin token never reaches a log.
"""

from __future__ import annotations

from stockade.client_config import LEGACY_CONTEXT, ConfigFile, Context
from stockade.errors import StockadeError
from stockade.lab.state import LabRecord, LabSettings

CLI_CONTEXT = "lab"  # the context `up` writes into the CLI config, and the only one `down` removes


def write_cli_config(settings: LabSettings, record: LabRecord, token: str) -> None:
    """Make the "lab" context (admin token, the lab CA) current; keep the file's other contexts."""
    try:
        cfg = ConfigFile.read(settings.config_path)
    except StockadeError:
        cfg = ConfigFile()  # unreadable: `up` must still leave a working CLI behind
    if cfg.legacy and cfg.contexts[LEGACY_CONTEXT].controller in (record.url, record.urls, record.plain_url):
        cfg.contexts.clear()  # the flat file an earlier `lab up` wrote for this same lab
    cfg.contexts[CLI_CONTEXT] = Context(record.urls, token, str(settings.ca_cert))
    cfg.current_context = CLI_CONTEXT
    cfg.write(settings.config_path)


def remove_cli_config(settings: LabSettings, record: LabRecord) -> bool:
    """Remove what `up` wrote: the "lab" context (or an earlier flat file) if it points at this lab."""
    try:
        cfg = ConfigFile.read(settings.config_path)
    except StockadeError:
        return False  # not ours to repair or delete
    ours = [name for name, c in cfg.contexts.items()
            if (name == CLI_CONTEXT or cfg.legacy) and c.controller in (record.url, record.urls, record.plain_url)]
    if not ours:
        return False
    for name in ours:
        del cfg.contexts[name]
    if cfg.current_context in ours:
        cfg.current_context = next(iter(cfg.contexts)) if len(cfg.contexts) == 1 else None
    cfg.write(settings.config_path)  # deletes the file when no context is left
    return True
