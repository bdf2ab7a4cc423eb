"""Debian's chromium, driven by Selenium through Debian's chromedriver, for the dashboard's tests.

Nothing is fetched at run time: the driver and the browser are the Debian packages' binaries
(`deps/commands.tsv`), given to Selenium by path, and SE_OFFLINE keeps Selenium Manager from
looking for others on the internet.

The lab's controller speaks HTTPS with a certificate from the lab's own CA. Rather than accepting
any certificate, the browser is told to trust exactly the controller's key: the test fetches the
certificate over a TLS connection verified against the lab CA, and passes the hash of its public
key to `--ignore-certificate-errors-spki-list` (Chromium honours it with a `--user-data-dir`).

Invariants: every browser gets a fresh profile directory of its own, and `quit()` leaves no
process behind: chromedriver and every chromium process of that profile are gone (awaited),
or the stragglers are killed and the test fails naming them.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import signal
import socket
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

from tests.waiting import process_gone, wait_until

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
WINDOW = (1400, 1000)


def missing_binaries() -> list[str]:
    """The browser binaries this machine lacks (empty when the tests can run)."""
    return [path for path in (CHROMIUM, CHROMEDRIVER) if not (os.path.exists(path) and os.access(path, os.X_OK))]


def server_key_pin(url: str, cafile: str) -> str:
    """base64(sha256(SubjectPublicKeyInfo)) of the certificate `url` serves, which must verify
    against `cafile` for the server's host name: the pin Chromium's SPKI list takes."""
    parts = urlsplit(url)
    host, port = parts.hostname or "", parts.port or 443
    context = ssl.create_default_context(cafile=cafile)
    with socket.create_connection((host, port), timeout=10) as raw, \
            context.wrap_socket(raw, server_hostname=host) as tls:
        der = tls.getpeercert(binary_form=True)
    if der is None:
        raise AssertionError(f"{url} presented no certificate")
    spki = x509.load_der_x509_certificate(der).public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


def _profile_pids(profile: Path) -> list[int]:
    """Processes whose command line names `profile`: the chromium processes of one browser."""
    marker = str(profile).encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if marker in cmdline and not process_gone(int(entry.name)):
            found.append(int(entry.name))
    return found


@dataclass
class Browser:
    """One headless chromium with a profile of its own; `quit()` ends all of it."""

    driver: webdriver.Chrome
    profile: Path

    def quit(self) -> None:
        driver_pid = self.driver.service.process.pid if self.driver.service.process else None
        try:
            self.driver.quit()
        finally:
            try:
                left = self._await_exit(driver_pid)
            finally:
                shutil.rmtree(self.profile, ignore_errors=True)
        if left:
            raise AssertionError(f"chromium processes outlived driver.quit() and were killed: {left}")

    def _await_exit(self, driver_pid: int | None) -> list[int]:
        """Wait for the driver and the profile's processes to end; kill (ours, by pid) what does not."""
        def gone() -> bool:
            return (driver_pid is None or process_gone(driver_pid)) and not _profile_pids(self.profile)
        try:
            wait_until(gone, "chromium and chromedriver to exit after quit()", timeout=10, interval=0.1)
            return []
        except AssertionError:
            left = _profile_pids(self.profile) + ([driver_pid] if driver_pid and not process_gone(driver_pid) else [])
            for pid in left:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            return left


def start(spki_pins: list[str], tag: str) -> Browser:
    """A headless chromium that trusts the given server keys; its console is logged in full."""
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must never download a driver or a browser
    profile = Path(tempfile.mkdtemp(prefix=f"chromium-{tag}-"))
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", f"--window-size={WINDOW[0]},{WINDOW[1]}",
                f"--user-data-dir={profile}", "--no-first-run", "--no-default-browser-check",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--hide-scrollbars", "--force-device-scale-factor=1"):
        options.add_argument(arg)
    if spki_pins:
        options.add_argument("--ignore-certificate-errors-spki-list=" + ",".join(spki_pins))
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    try:
        driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    except BaseException:
        for pid in _profile_pids(profile):  # a browser that started but never answered the driver
            os.kill(pid, signal.SIGKILL)
        shutil.rmtree(profile, ignore_errors=True)
        raise
    return Browser(driver, profile)
