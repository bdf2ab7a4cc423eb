"""Import pyroute2's netlink modules without running `pyroute2/__init__.py` first.

The agent needs a few of pyroute2's netlink pieces (constants, `nla`, the
nfnetlink and conntrack message classes: dataplane.nflog, dataplane.conntrack).
But importing any `pyroute2.x` runs the package's `__init__`, and in the pinned
pyroute2 (0.9.7) that imports nearly all of pyroute2 (IPRoute, NDB with sqlite3,
IPDB, ipset, wireguard, nl80211, plan9, unittest.mock, ...): 13 MB of every
agent's resident memory, against 4 MB for the modules it uses
(docs/performance.md). pyroute2 has no narrower entry point, so this registers
the package module without executing its `__init__`; submodules then import
normally, from the same files.

Nothing is lost: the first lookup of a name that only the `__init__` defines
(`from pyroute2 import IPRoute`, as the lab does) runs the real `__init__` in
that same module object (PEP 562 module `__getattr__`), so the rest of pyroute2
appears exactly as without this module. Import this before any pyroute2 module.
"""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType
from typing import Any


def register() -> bool:
    """Register `pyroute2` without running its `__init__`; False when already imported or not installed."""
    if "pyroute2" in sys.modules:
        return False
    spec = importlib.util.find_spec("pyroute2")
    if spec is None or spec.loader is None or spec.submodule_search_locations is None:
        return False  # not installed as a package: the ordinary import will say so
    module = importlib.util.module_from_spec(spec)  # __path__, __spec__, __file__; the code not run
    loader = spec.loader

    def __getattr__(name: str) -> Any:
        # A submodule (`from pyroute2 import config, netns`, as pyroute2's own modules do): import
        # just that. Any other name only the package's __init__ defines: run it now, once, here.
        if not name.startswith("__") and importlib.util.find_spec(f"pyroute2.{name}") is not None:
            return importlib.import_module(f"pyroute2.{name}")
        if module.__dict__.pop("__getattr__", None) is None:
            raise AttributeError(f"module 'pyroute2' has no attribute {name!r}")
        loader.exec_module(module)
        try:
            return module.__dict__[name]
        except KeyError:
            raise AttributeError(f"module 'pyroute2' has no attribute {name!r}") from None

    module.__getattr__ = __getattr__  # type: ignore[method-assign]
    sys.modules["pyroute2"] = module
    return True


def is_lean(module: ModuleType | None = None) -> bool:
    """Is pyroute2 still without its `__init__` run? (For tests.)"""
    module = module or sys.modules.get("pyroute2")
    return module is not None and "__getattr__" in module.__dict__


register()
