"""Every file the dashboard serves is shipped in the package (pyproject's package-data), so an
installed controller serves the same pages as a source tree, with nothing fetched from elsewhere."""

from __future__ import annotations

import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
PACKAGE = REPO / "src" / "stockade"
DASHBOARD = PACKAGE / "controller" / "dashboard"


def _matches(relative: Path, pattern: str) -> bool:
    # setuptools' package-data globs: `**` spans folders, `*` does not.
    if "**" in pattern:
        head, _, tail = pattern.partition("**/")
        return str(relative).startswith(head) and relative.match(tail or "*")
    return relative.match(pattern) and len(relative.parts) == len(Path(pattern).parts)


def test_every_dashboard_asset_is_package_data() -> None:
    globs = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["stockade"]
    assets = [p.relative_to(PACKAGE) for p in DASHBOARD.rglob("*")
              if p.is_file() and p.suffix not in (".py", ".pyc") and "__pycache__" not in p.parts]
    assert len(assets) > 20  # templates, scripts, styles, the vendored libraries
    missing = [str(a) for a in assets if not any(_matches(a, g) for g in globs)]
    assert missing == [], "add these to [tool.setuptools.package-data] in pyproject.toml"


def test_the_pattern_check_can_fail() -> None:
    assert not _matches(Path("controller/dashboard/fonts/x.woff2"), "controller/dashboard/templates/*.html")
    assert _matches(Path("controller/dashboard/static/vendor/x.js"), "controller/dashboard/static/**/*")
