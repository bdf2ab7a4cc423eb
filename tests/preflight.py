"""Before any test runs: is everything the suite calls on this machine?

`make test` runs this first (`python -m tests.preflight`), and the top conftest runs the same
check when pytest is started by hand. A missing command fails here in a second, naming the
Debian package that brings it, instead of as a time-out deep inside a kernel test (a test
that waits 10 s for an nginx that was never installed). The list of commands is
`deps/commands.tsv`, the same file `make install` takes its packages from, so a command
added there is both installed and checked. A package that brings no command (the guest kernel
of the lab's VMs, a static libc) is listed by a file it installs instead: a "command" that
starts with `/` is an absolute path, shell wildcards allowed, that must match an existing file.

Never skips anything: the kernel tests need root and these commands, and a machine without
them is a broken machine, not a reason to report fewer tests.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

COMMANDS_FILE = Path(__file__).resolve().parents[1] / "deps" / "commands.tsv"

# Python modules the suite itself needs beyond the project's dependencies (pytest plugins the
# Makefile's pytest command line relies on), with the pinned package that provides each.
TEST_MODULES = {"xdist": "pytest-xdist", "pytest_randomly": "pytest-randomly", "pytest_timeout": "pytest-timeout",
                "opentelemetry.proto": "opentelemetry-proto"}  # the OTLP receiver of tests/controller/test_flow_otlp.py


@dataclass(frozen=True)
class RequiredCommand:
    command: str
    package: str
    needed_by: str

    @property
    def is_path(self) -> bool:
        return self.command.startswith("/")

    def present(self) -> bool:
        """The command is on the PATH, or (for a path) some file matches it."""
        if self.is_path:
            return any(Path(match).is_file() for match in glob.glob(self.command))
        return shutil.which(self.command) is not None


def required_commands(path: Path = COMMANDS_FILE) -> list[RequiredCommand]:
    """The commands of `deps/commands.tsv`: `command<TAB>package<TAB>who runs it` per line."""
    found = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.split("\t")
        if len(fields) != 3 or not all(f.strip() for f in fields):
            raise ValueError(f"{path}:{number}: expected 'command<TAB>package<TAB>who runs it', got {line!r}")
        found.append(RequiredCommand(*(f.strip() for f in fields)))
    return found


def problems(kernel_tests: bool = True, commands_file: Path = COMMANDS_FILE) -> list[str]:
    """Everything missing, one sentence each; empty when the suite can run."""
    found = []
    missing = [c for c in required_commands(commands_file) if not c.present()]
    if missing:
        packages = sorted({c.package for c in missing})
        for c in missing:
            what = "file" if c.is_path else "command"
            found.append(f"{what} {c.command!r} not found: install the Debian package {c.package!r} "
                         f"(needed by {c.needed_by})")
        found.append(f"fix: `make install`, or apt-get install -y {' '.join(packages)}")
    for module, package in TEST_MODULES.items():
        if importlib.util.find_spec(module) is None:
            found.append(f"Python module {module!r} not found: pip install the pinned {package!r} "
                         f"from requirements.lock (`make install`)")
    if kernel_tests and os.geteuid() != 0:
        found.append("the kernel tests program nftables in network namespaces and need root: "
                     "run `make test` as root, or select `-m 'not kernel'`")
    return found


def main() -> int:
    found = problems()
    if found:
        print("preflight: this machine cannot run the test suite:", file=sys.stderr)
        for line in found:
            print(f"  - {line}", file=sys.stderr)
        return 3
    print(f"preflight: {len(required_commands())} commands, {len(TEST_MODULES)} test plugins and root: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
