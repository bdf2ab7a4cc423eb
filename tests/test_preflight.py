"""The preflight check names what is missing and the package that brings it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import preflight


def test_every_listed_command_names_a_package_and_is_installed_here() -> None:
    listed = preflight.required_commands()
    assert {"nft", "ip", "nginx", "wrk", "conntrack"} <= {c.command for c in listed}
    assert [c.command for c in listed if not c.present()] == []


def test_a_package_without_a_command_is_checked_by_a_file_it_installs(tmp_path: Path) -> None:
    (tmp_path / "vmlinuz-1.2-cloud").write_bytes(b"")
    commands = tmp_path / "commands.tsv"
    commands.write_text(f"{tmp_path}/vmlinuz-*-cloud\tlinux-image-cloud\tthe VMs\n"
                        f"{tmp_path}/libc-*.a\tlibc-dev-x9\tthe guest's static binary\n")
    found = preflight.problems(kernel_tests=False, commands_file=commands)
    assert any("file" in p and "libc-*.a" in p and "'libc-dev-x9'" in p for p in found), found
    assert not any("vmlinuz" in p for p in found), found


def test_a_missing_command_is_named_with_its_package(tmp_path: Path) -> None:
    commands = tmp_path / "commands.tsv"
    commands.write_text("# comment\nip\tiproute2\tthe lab\nno-such-tool-x9\tsome-deb\tthe frobnicator\n")
    found = preflight.problems(kernel_tests=False, commands_file=commands)
    assert any("'no-such-tool-x9'" in p and "'some-deb'" in p and "frobnicator" in p for p in found), found
    assert found[-1] == "fix: `make install`, or apt-get install -y some-deb"
    assert not any("'ip'" in p for p in found)


def test_a_malformed_line_is_refused_with_its_line_number(tmp_path: Path) -> None:
    commands = tmp_path / "commands.tsv"
    commands.write_text("ip iproute2 spaces-not-tabs\n")
    with pytest.raises(ValueError, match=r"commands.tsv:1: expected"):
        preflight.required_commands(commands)
