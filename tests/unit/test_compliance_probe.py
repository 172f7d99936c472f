"""The probe's reads go through the facts' own commands and parsers: run here by the local shell, as over ssh."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from compliance import checks
from compliance.context import HostContext
from compliance.probe import Probe, SshReader
from facts.security import SSHD_EFFECTIVE_KEYS
from tests.unit.compliance_fakes import SSHD_T, FakeNode, Result, probe

pytestmark = pytest.mark.unit

# systemctl show --no-pager -p PROPS -- UNIT...: kubelet is installed, nothing else is
SYSTEMCTL = """#!/bin/sh
shift 5
for u in "$@"; do
  if [ "$u" = kubelet.service ]; then
    printf 'Id=%s\\nLoadState=loaded\\nActiveState=active\\nSubState=running\\nUnitFileState=enabled\\n\\n' "$u"
  else
    printf 'Id=%s\\nLoadState=not-found\\nActiveState=inactive\\nSubState=dead\\nUnitFileState=\\n\\n' "$u"
  fi
done
"""


class LocalShell:
    """A testinfra-like host running each command with the local sh (stub programs first on PATH)."""

    def __init__(self, bin_dir: Path) -> None:
        self.env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
        self.commands: list[str] = []

    def run(self, command: str) -> Result:
        self.commands.append(command)
        done = subprocess.run(["sh", "-c", command], capture_output=True, text=True, env=self.env, check=False)
        return Result(done.stdout, done.returncode, done.stderr)


@pytest.fixture
def shell(tmp_path: Path) -> LocalShell:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "systemctl").write_text(SYSTEMCTL)
    (bin_dir / "systemctl").chmod(0o755)
    return LocalShell(bin_dir)


def test_files_globs_trees_and_contents_through_file_states(shell: LocalShell, tmp_path: Path) -> None:
    root = tmp_path / "etc"
    (root / "unit.d").mkdir(parents=True)
    (root / "unit.d" / "10-a.conf").write_text("[Service]\n")
    (root / "unit.d" / "20-b.conf").write_text("[Service]\n")
    (root / "unit.d" / "20-b.conf").chmod(0o644)
    (root / "config.yaml").write_text("readOnlyPort: 0\n")
    (root / "config.yaml").chmod(0o600)
    target = Probe(SshReader(shell, "local"), HostContext("local"))

    found = target.matching(
        [f"{root}/config.yaml", f"{root}/unit.d/*.conf", f"{root}/missing", f"{root}/none.d/*.conf"]
    )
    assert list(found) == [f"{root}/config.yaml", f"{root}/unit.d/10-a.conf", f"{root}/unit.d/20-b.conf"]
    assert (found[f"{root}/config.yaml"]["type"], found[f"{root}/config.yaml"]["mode"]) == ("file", "600")
    assert found[f"{root}/unit.d/20-b.conf"]["mode"] == "644"
    assert target.read_yaml(f"{root}/config.yaml") == {"readOnlyPort": 0}
    assert sorted(target.tree(str(root))) == sorted(
        [str(root), f"{root}/unit.d", f"{root}/unit.d/10-a.conf", f"{root}/unit.d/20-b.conf", f"{root}/config.yaml"]
    )
    assert target.tree(f"{root}/absent") == {}
    before = len(shell.commands)
    target.matching([f"{root}/unit.d/*.conf"])
    target.files([f"{root}/config.yaml", f"{root}/missing"])
    assert len(shell.commands) == before  # read once


def test_units_and_sysctls_through_their_facts(shell: LocalShell) -> None:
    target = Probe(SshReader(shell, "local"), HostContext("local"))
    units = target.units(["kubelet", "etcd.service"])
    assert units["kubelet.service"] is not None and units["kubelet.service"]["active"] == "active"
    assert units["etcd.service"] is None
    assert len(shell.commands) == 1 and "systemctl show" in shell.commands[0]
    assert checks.run_check("SPX-SVC-007", target).status == "pass"
    values = target.sysctls(["kernel.ostype", "spectra.no.such.key"])
    assert values == {"kernel.ostype": "Linux", "spectra.no.such.key": None}


def test_sshd_settings_beyond_those_the_hardening_manages_are_read() -> None:
    settings = probe(FakeNode(commands={"sshd -T": Result(SSHD_T)})).sshd()
    assert {"hostbasedauthentication", "ignorerhosts"} <= set(settings) - set(SSHD_EFFECTIVE_KEYS)
    assert settings["permitrootlogin"] == "without-password" and settings["maxauthtries"] == "3"


def test_sshd_that_cannot_print_its_configuration_fails_the_checks_with_its_error() -> None:
    broken = FakeNode(commands={"sshd -T": Result("/etc/ssh/sshd_config line 3: Bad configuration option\n", 255)})
    outcome = checks.run_check("SPX-SSH-004", probe(broken))
    assert outcome.status == "fail" and "sshd -T exited 255" in outcome.reason and "Bad configuration" in outcome.reason
