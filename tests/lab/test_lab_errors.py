"""The lab refuses what it cannot do, with a clear message, a non-zero exit and nothing half-made.

These run against a separate state directory and subnet, so the main lab is untouched.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.lab.conftest import REPO

pytestmark = pytest.mark.lab


def lab_cli_in(state_dir: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = dict(os.environ, SPECTRA_LAB_DIR=str(state_dir), **(env or {}))
    return subprocess.run(
        [sys.executable, "-m", "lab", *args], cwd=REPO, capture_output=True, text=True, env=environment, timeout=300
    )


def link_exists(name: str) -> bool:
    return subprocess.run(["ip", "link", "show", "dev", name], capture_output=True).returncode == 0


@pytest.fixture
def foreign_link() -> Iterator[str]:
    """An interface that is not the lab's, holding an address in 198.19.250.0/24."""
    name = "sptestfrg0"
    subprocess.run(["ip", "link", "add", name, "type", "bridge"], check=True)
    subprocess.run(["ip", "address", "add", "198.19.250.5/24", "dev", name], check=True)
    yield name
    subprocess.run(["ip", "link", "delete", name], check=False)


def test_an_address_in_use_elsewhere_stops_up_before_anything_is_made(tmp_path: Path, foreign_link: str) -> None:
    result = lab_cli_in(tmp_path, "up", "--nodes", "1", "--subnet", "198.19.250.0/24", "--bridge", "sptestbr0")
    assert result.returncode == 1
    assert f"198.19.250.5/24 on {foreign_link} overlaps the lab subnet 198.19.250.0/24" in result.stderr
    assert not link_exists("sptestbr0")
    assert not (tmp_path / "state.json").exists()


def test_a_bridge_not_made_by_the_lab_is_not_taken_over(tmp_path: Path, foreign_link: str) -> None:
    result = lab_cli_in(tmp_path, "up", "--nodes", "1", "--subnet", "198.19.251.0/24", "--bridge", foreign_link)
    assert result.returncode == 1
    assert f"interface {foreign_link} already exists and was not made by this lab" in result.stderr
    assert not (tmp_path / "state.json").exists()


def test_a_debootstrap_failure_shows_the_mirrors_own_message(tmp_path: Path) -> None:
    result = lab_cli_in(
        tmp_path,
        "up", "--nodes", "1", "--subnet", "198.19.252.0/24", "--bridge", "sptestbr0",
        env={"SPECTRA_LAB_CACHE": str(tmp_path / "cache"),
             "SPECTRA_LAB_DEBIAN_MIRROR": "http://127.0.0.1:9/debian"},
    )  # fmt: skip
    assert result.returncode == 1
    assert "debootstrap of bookworm from http://127.0.0.1:9/debian failed" in result.stderr
    assert "Failed getting release file" in result.stderr or "Connection refused" in result.stderr, result.stderr
    assert not link_exists("sptestbr0")


def test_missing_host_tools_are_named_with_their_packages(tmp_path: Path) -> None:
    result = lab_cli_in(tmp_path, "up", env={"PATH": "/nonexistent"})
    assert result.returncode == 1
    assert "missing host tools; install them with: apt-get install -y" in result.stderr
    assert "debootstrap" in result.stderr and "systemd-container" in result.stderr


def test_not_root_is_refused(tmp_path: Path) -> None:
    tmp_path.chmod(0o755)
    result = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
         sys.executable, "-m", "lab", "up"],
        cwd=REPO, capture_output=True, text=True, env=dict(os.environ, SPECTRA_LAB_DIR=str(tmp_path)),
    )  # fmt: skip
    assert result.returncode == 1
    assert "the lab needs root" in result.stderr
