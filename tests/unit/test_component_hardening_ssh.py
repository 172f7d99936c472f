"""SSH hardening: rendered drop-in, validation before it goes live, reload only on change, lock-out refusal."""

from __future__ import annotations

import hashlib
import re
from typing import Any

import pytest
from pyinfra.api import DeployError, OperationError

from deploys.components import hardening_ssh
from deploys.components.hardening_ssh import CIPHERS, COMPONENT, KEX_COMMON, MACS, kex_for_version, ssh_hardening
from deploys.settings import owners
from facts.security import SshdState
from tests.unit.pyinfra_harness import run_component, run_deploy

pytestmark = pytest.mark.unit

DROPIN = "/etc/ssh/sshd_config.d/00-spectra-hardening.conf"
STAGED = "/etc/ssh/sshd_config.d/.00-spectra-hardening.conf.spectra-new"
GOOD_EFFECTIVE = {
    "permitrootlogin": "without-password",
    "passwordauthentication": "no",
    "kbdinteractiveauthentication": "no",
    "pubkeyauthentication": "yes",
    "permitemptypasswords": "no",
}


def sshd_state(dropin: dict[str, Any] | None = None, version: str = "1:9.2p1-2+deb12u3", **effective: str):
    return {
        "dropin": dropin,
        "package_version": version,
        "version": hardening_ssh.SshdState().process([f"V\t{version}"])["version"],
        "effective": {**GOOD_EFFECTIVE, **effective},
    }


def run(state: dict[str, Any], **data: Any):
    return run_deploy(ssh_hardening, facts={SshdState: state}, data={"ssh_user": "root", **data})


def refused(**data: Any) -> None:
    """Run the component as node.py does with these settings: refused before any fact or operation (no fact
    is given, so reading one would fail with MissingFact instead)."""
    run_component(COMPONENT, facts={}, data={"ssh_user": "root", **data})


def test_fresh_host_stages_validates_then_moves_then_reloads() -> None:
    result = run(sshd_state())
    commands = result.commands
    upload = next(i for i, c in enumerate(commands) if c.startswith(f"upload {STAGED}"))
    validate = next(i for i, c in enumerate(commands) if "sshd -t -f" in c)
    move = commands.index(f"mv -f {STAGED} {DROPIN}")
    reload = next(i for i, c in enumerate(commands) if "systemctl reload ssh.service" in c)
    assert upload < validate < move < reload
    assert not any("restart" in c for c in commands), "ssh must be reloaded, never restarted"
    # a failed validation removes the staged file and stops before the move
    assert f"rm -f {STAGED}" in commands[validate]
    assert "exit 1" in commands[validate]
    # the owner/mode is set on the staged file, before it is live
    assert commands[upload + 1] == f"chown root:root {STAGED} && chmod 600 {STAGED}"


def test_rendered_dropin_settings() -> None:
    result = run(sshd_state())
    text = result.uploads[STAGED]
    lines = dict(line.split(" ", 1) for line in text.splitlines() if line and not line.startswith("#"))
    assert lines["PasswordAuthentication"] == "no"
    assert lines["KbdInteractiveAuthentication"] == "no"
    assert lines["PermitRootLogin"] == "prohibit-password"
    assert lines["X11Forwarding"] == "no"
    assert lines["AllowTcpForwarding"] == "no"
    assert lines["MaxAuthTries"] == "3"
    assert lines["LoginGraceTime"] == "30"
    assert lines["KexAlgorithms"].split(",") == KEX_COMMON
    assert lines["Ciphers"].split(",") == CIPHERS
    assert lines["MACs"].split(",") == MACS
    assert "mlkem" not in text  # OpenSSH 9.2 does not know ML-KEM


def test_openssh_10_gets_mlkem_first() -> None:
    result = run(sshd_state(version="1:10.0p1-7"))
    kex = next(line for line in result.uploads[STAGED].splitlines() if line.startswith("KexAlgorithms"))
    assert kex.split(" ", 1)[1].split(",")[0] == "mlkem768x25519-sha256"
    assert kex_for_version((9, 8), KEX_COMMON, ["mlkem768x25519-sha256"]) == KEX_COMMON


def test_validator_checks_the_effective_values_in_the_real_read_order() -> None:
    result = run(sshd_state(), ssh_permit_root_login="prohibit-password")
    validate = next(c for c in result.commands if "sshd -t -f" in c)
    assert "sshd -T -f" in validate
    assert "/etc/ssh/sshd_config" in validate  # copy of the real main file, staged include inserted
    assert "'permitrootlogin|prohibit-password|without-password'" in validate
    assert "passwordauthentication|no" in validate


def test_no_change_is_a_noop_with_one_fact_read() -> None:
    first = run(sshd_state())
    content = first.uploads[STAGED]
    current = {
        "type": "file",
        "mode": "600",
        "user": "root",
        "group": "root",
        "sha256": hashlib.sha256(content.encode()).hexdigest(),
    }
    result = run(sshd_state(dropin=current))
    assert result.commands == []
    assert len(result.fact_reads) == 1
    assert result.noops


def test_mode_drift_only_fixes_mode_without_reload() -> None:
    content = run(sshd_state()).uploads[STAGED]
    current = {
        "type": "file",
        "mode": "644",
        "user": "root",
        "group": "root",
        "sha256": hashlib.sha256(content.encode()).hexdigest(),
    }
    result = run(sshd_state(dropin=current))
    assert result.commands == [f"chmod 600 {DROPIN}"]


def test_main_file_override_is_reported() -> None:
    content = run(sshd_state()).uploads[STAGED]
    current = {
        "type": "file",
        "mode": "600",
        "user": "root",
        "group": "root",
        "sha256": hashlib.sha256(content.encode()).hexdigest(),
    }
    with pytest.raises(OperationError, match="passwordauthentication"):
        run(sshd_state(dropin=current, passwordauthentication="yes"))


def test_refuses_root_lockout_when_connecting_as_root() -> None:
    with pytest.raises(DeployError, match="ssh_permit_root_login='no': refused, this deploy connects as root"):
        refused(ssh_permit_root_login="no")


def test_refuses_root_lockout_when_login_user_unknown() -> None:
    with pytest.raises(DeployError, match="without ssh_user set"):
        run_component(COMPONENT, facts={}, data={"ssh_permit_root_login": "no"})


def test_root_login_no_allowed_for_sudo_user_or_with_override() -> None:
    as_admin = run(sshd_state(), ssh_user="admin", ssh_permit_root_login="no")
    assert "PermitRootLogin no" in as_admin.uploads[STAGED]
    assert "'permitrootlogin|no'" in next(c for c in as_admin.commands if "sshd -t" in c)
    override = run(sshd_state(), ssh_permit_root_login="no", ssh_allow_root_lockout=True)
    assert "PermitRootLogin no" in override.uploads[STAGED]


def test_refuses_to_disable_passwords_for_a_password_login() -> None:
    with pytest.raises(DeployError, match="ssh_password is set") as error:
        refused(ssh_password="secret")
    assert "secret" not in str(error.value)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"ssh_permit_root_login": "yes"}, "ssh_permit_root_login='yes': not one of 'prohibit-password', 'no'"),
        ({"ssh_allow_tcp_forwarding": "sometimes"}, "ssh_allow_tcp_forwarding='sometimes': not one of"),
        ({"ssh_dropin_path": "/etc/ssh/sshd_config"}, "ssh_dropin_path='/etc/ssh/sshd_config': must be"),
        ({"ssh_dropin_path": "/etc/ssh/sshd_config.d/x/y.conf"}, "ssh_dropin_path="),
        ({"ssh_max_auth_tries": 0}, "ssh_max_auth_tries=0: a positive integer"),
        ({"ssh_login_grace_time": "30"}, "ssh_login_grace_time='30': a positive integer"),
        ({"ssh_client_alive_interval": True}, "ssh_client_alive_interval=True: a positive integer"),
        ({"ssh_max_sessions": -1}, "ssh_max_sessions=-1: an integer, 0 or more"),
        ({"ssh_log_level": "LOUD"}, "ssh_log_level='LOUD': one of QUIET"),
        ({"ssh_max_startups": "10 30 60"}, "ssh_max_startups='10 30 60'"),
        ({"ssh_ciphers": []}, "ssh_ciphers=[]: a list of algorithm names"),
        ({"ssh_macs": ["hmac-sha2-512,none"]}, "ssh_macs: 'hmac-sha2-512,none' is not an algorithm name"),
    ],
)
def test_bad_values_refused_before_any_fact_or_operation(data: dict[str, Any], message: str) -> None:
    with pytest.raises(DeployError, match=re.escape(message)):
        refused(**data)


def test_checks_are_pure() -> None:
    """`spectra validate` runs them on plain data, with no host and no pyinfra context."""
    defaults = {key: owner.default for key, owner in owners().items()}
    assert COMPONENT.problems(defaults) == []
    assert COMPONENT.problems({**defaults, "ssh_log_level": "verbose", "ssh_kex_algorithms_mlkem": []}) == []
    assert COMPONENT.problems({**defaults, "ssh_permit_root_login": "no", "ssh_user": "admin"}) == []
    assert COMPONENT.problems({**defaults, "ssh_permit_root_login": "no", "ssh_allow_root_lockout": True}) == []
    assert COMPONENT.problems({**defaults, "ssh_hardening_enabled": False, "ssh_max_auth_tries": 0}) == []


def test_missing_openssh_server_is_an_error() -> None:
    state = sshd_state()
    state["version"] = None
    with pytest.raises(OperationError, match="openssh-server is not installed"):
        run(state)


def test_disabled_reads_nothing_and_does_nothing() -> None:
    result = run_component(COMPONENT, facts={}, data={"ssh_hardening_enabled": False, "ssh_permit_root_login": "x"})
    assert result.ops == [] and result.fact_reads == []


def test_component_reads_its_one_fact() -> None:
    result = run_component(COMPONENT, facts={SshdState: sshd_state()}, data={"ssh_user": "root"})
    assert result.fact_reads == [("facts.security.SshdState", {"dropin": DROPIN})]
    assert result.commands == run(sshd_state()).commands


def test_algorithms_are_supported_by_pyinfras_ssh_client() -> None:
    """The deploy's next run connects with paramiko: every list must share an algorithm with it."""
    from paramiko import Transport

    preferred: dict[str, tuple[str, ...]] = {
        name: getattr(Transport, f"_preferred_{name}") for name in ("kex", "ciphers", "macs")
    }
    assert set(KEX_COMMON) & set(preferred["kex"])
    assert set(CIPHERS) & set(preferred["ciphers"])
    # aes*-ctr needs a MAC paramiko also has
    assert set(MACS) & set(preferred["macs"])


def test_sshd_state_fact_parses_output() -> None:
    fact = hardening_ssh.SshdState()
    parsed = fact.process(
        [
            f"M|{DROPIN}",
            "V\t1:9.2p1-2+deb12u3",
            "E\tpermitrootlogin without-password",
            "E\tpasswordauthentication no",
        ]
    )
    assert parsed["dropin"] is None
    assert parsed["version"] == (9, 2)
    assert parsed["effective"] == {"permitrootlogin": "without-password", "passwordauthentication": "no"}
