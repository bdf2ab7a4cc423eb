"""The shipped systemd units and etcd settings name only options that exist (docs stay true)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"


def help_text(*command: str) -> str:
    return subprocess.run([sys.executable, "-m", "stockade", *command, "--help"], capture_output=True, text=True,
                          timeout=60, env={"COLUMNS": "300", "PATH": "/usr/bin:/bin"}).stdout


@pytest.mark.parametrize("unit, command", [
    ("stockade-controller.service", ("controller", "serve")),
    ("stockade-agent.service", ("agent", "run")),
    ("stockade-backup.service", ("backup",)),
])
def test_every_option_a_unit_shows_exists(unit: str, command: tuple[str, ...]) -> None:
    text = (DEPLOY / "systemd" / unit).read_text()
    assert f"/usr/local/bin/stockade {' '.join(command)} " in text
    shown = set(re.findall(r"(--[a-z][a-z-]+)", text))
    assert shown, f"{unit} shows no example options"
    known = set(re.findall(r"(--[a-z][a-z-]+)", help_text(*command)))
    assert shown <= known, f"{unit} names options {sorted(shown - known)} that `stockade {' '.join(command)}` lacks"


def test_the_etcd_member_settings_allow_one_revision_of_ten_thousand_objects() -> None:
    settings = dict(line.split("=", 1) for line in (DEPLOY / "etcd" / "etcd-member.env.example").read_text().splitlines()
                    if line and not line.startswith("#"))
    assert int(settings["ETCD_MAX_TXN_OPS"].strip('"')) >= 10_003
    assert settings["ETCD_CLIENT_CERT_AUTH"] == '"true"'


def test_the_backup_timer_starts_the_backup_service_and_the_service_keeps_its_files_private() -> None:
    timer = (DEPLOY / "systemd" / "stockade-backup.timer").read_text()
    service = (DEPLOY / "systemd" / "stockade-backup.service").read_text()
    assert "OnCalendar=" in timer and "Persistent=true" in timer and "WantedBy=timers.target" in timer
    assert "Type=oneshot" in service and "UMask=0077" in service
    # The environment the unit documents is what the CLI reads (client_config).
    assert "STOCKADE_CONTROLLER=" in service and "STOCKADE_CA=" in service
    config = (Path(__file__).resolve().parent.parent / "src" / "stockade" / "client_config.py").read_text()
    assert '"STOCKADE_CONTROLLER"' in config and '"STOCKADE_CA"' in config


PROMETHEUS = DEPLOY / "prometheus"


def test_the_sli_and_alert_rules_pass_promtools_checks_and_unit_tests() -> None:
    """Issue 19: the recording and burn-rate rules Prometheus would load, checked and unit-tested by
    Debian's promtool (deploy/prometheus/tests: each alert firing when, and only when, it should)."""
    checked = subprocess.run(["promtool", "check", "rules", str(PROMETHEUS / "stockade-rules.yml")],
                             capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0 and "SUCCESS" in checked.stdout, checked.stdout + checked.stderr
    tested = subprocess.run(["promtool", "test", "rules", "stockade-rules-test.yml"], cwd=PROMETHEUS / "tests",
                            capture_output=True, text=True, timeout=120)
    assert tested.returncode == 0 and "SUCCESS" in tested.stdout, tested.stdout + tested.stderr


def test_the_rules_name_only_metrics_stockade_exports() -> None:
    """A rule on a renamed metric would silently record nothing: every stockade_* name the rules
    read is one docs/operations.md lists (which a test holds to what the code exports)."""
    rules = (PROMETHEUS / "stockade-rules.yml").read_text()
    docs = (DEPLOY.parent / "docs" / "operations.md").read_text()
    read = set(re.findall(r"\b(stockade_[a-z_]+?)(?:_bucket|_count|_sum)?\b[\[{( ]", rules))
    assert read, "the rules read no metric"
    missing = sorted(n for n in read if f"`{n}" not in docs)
    assert not missing, missing
