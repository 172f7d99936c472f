"""SSH hardening: the whole rendered drop-in per OpenSSH version, validation before it goes live, reload only
on change, the host key, lock-out refusal (root login, passwords, algorithms paramiko could not use)."""

from __future__ import annotations

import hashlib
import re
from typing import Any

import pytest
from pyinfra.api import DeployError, OperationError

from deploys.components import hardening_ssh
from deploys.components.hardening_ssh import CIPHERS, COMPONENT, HOST_KEY, KEX, MACS, kex_for_version, ssh_hardening
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
    "hostkey": "/etc/ssh/ssh_host_ed25519_key",
    "compression": "no",
}
DEBIAN_12 = "1:9.2p1-2+deb12u3"
DEBIAN_13 = "1:10.0p1-7"
RELOAD = "if systemctl is-active --quiet ssh.service; then systemctl reload ssh.service; fi"
KEYGEN = (
    "rm -f /etc/ssh/ssh_host_ed25519_key /etc/ssh/ssh_host_ed25519_key.pub && "
    "ssh-keygen -q -t ed25519 -N '' -C '' -f /etc/ssh/ssh_host_ed25519_key </dev/null"
)

# The whole drop-in on Debian 12 (OpenSSH 9.2): no ML-KEM, no sntrup761 under its 9.9 name
DROPIN_OPENSSH_9_2 = """\
# Managed by spectra-infra (deploys/components/hardening_ssh.py). Local edits are overwritten.
# sshd keeps the FIRST value it reads for a keyword. Debian's /etc/ssh/sshd_config includes
# sshd_config.d/*.conf at its top, and this file sorts first there, so these values win.

# Host key: this one only (HostKey lines add up: none may appear in another file)
HostKey /etc/ssh/ssh_host_ed25519_key

# Authentication: keys only
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitEmptyPasswords no
PermitRootLogin prohibit-password
AuthenticationMethods publickey
MaxAuthTries 3
LoginGraceTime 30
PermitUserEnvironment no

# Sessions
X11Forwarding no
AllowTcpForwarding no
AllowAgentForwarding no
PermitTunnel no
ClientAliveInterval 300
ClientAliveCountMax 3
MaxSessions 10
MaxStartups 10:30:60
PerSourceMaxStartups 5
UseDNS no
Compression no
LogLevel VERBOSE

# Cryptography (every algorithm listed exists in the installed OpenSSH 9.2). ssh-audit 3.9.0
# warns only about curve25519-sha256@libssh.org (no post-quantum protection): pyinfra's paramiko needs it.
KexAlgorithms sntrup761x25519-sha512@openssh.com,curve25519-sha256@libssh.org
Ciphers chacha20-poly1305@openssh.com,aes256-gcm@openssh.com,aes256-ctr,aes192-ctr,aes128-gcm@openssh.com,aes128-ctr
MACs hmac-sha2-512-etm@openssh.com,hmac-sha2-256-etm@openssh.com,umac-128-etm@openssh.com
"""
# Debian 13 (OpenSSH 10.0): the same file, with the two post-quantum exchanges OpenSSH 9.9 brought in front
DROPIN_OPENSSH_10_0 = DROPIN_OPENSSH_9_2.replace("OpenSSH 9.2)", "OpenSSH 10.0)").replace(
    "KexAlgorithms sntrup761x25519-sha512@openssh.com,",
    "KexAlgorithms mlkem768x25519-sha256,sntrup761x25519-sha512,sntrup761x25519-sha512@openssh.com,",
)


def sshd_state(dropin: dict[str, Any] | None = None, version: str = DEBIAN_12, host_key: bool = True, **effective: str):
    return {
        "dropin": dropin,
        "package_version": version,
        "version": hardening_ssh.SshdState().process([f"V\t{version}"])["version"],
        "host_key": host_key,
        "effective": {**GOOD_EFFECTIVE, **effective},
    }


def live(content: str, mode: str = "600") -> dict[str, Any]:
    """The FileState of the drop-in when ``content`` is in place."""
    sha = hashlib.sha256(content.encode()).hexdigest()
    return {"type": "file", "mode": mode, "user": "root", "group": "root", "sha256": sha}


def fresh_commands(content: str) -> list[str]:
    """Every command but the validation script (checked on its own below), in order."""
    sha = hashlib.sha256(content.encode()).hexdigest()
    return [
        "mkdir -p /etc/ssh/sshd_config.d",
        f"upload {STAGED} sha256={sha}",
        f"chown root:root {STAGED} && chmod 600 {STAGED}",
        "<validate>",
        f"mv -f {STAGED} {DROPIN}",
        RELOAD,
    ]


def without_validation(commands: list[str]) -> list[str]:
    return ["<validate>" if "sshd -t -f" in command else command for command in commands]


def run(state: dict[str, Any], **data: Any):
    return run_deploy(ssh_hardening, facts={SshdState: state}, data={"ssh_user": "root", **data})


def refused(**data: Any) -> None:
    """Run the component as node.py does with these settings: refused before any fact or operation (no fact
    is given, so reading one would fail with MissingFact instead)."""
    run_component(COMPONENT, facts={}, data={"ssh_user": "root", **data})


@pytest.mark.parametrize(
    ("version", "expected"), [(DEBIAN_12, DROPIN_OPENSSH_9_2), (DEBIAN_13, DROPIN_OPENSSH_10_0)], ids=["9.2", "10.0"]
)
def test_fresh_host_gets_the_whole_drop_in_for_its_openssh(version: str, expected: str) -> None:
    result = run(sshd_state(version=version))
    assert result.uploads == {STAGED: expected}
    assert without_validation(result.commands) == fresh_commands(expected)
    # a failed validation removes the staged file and stops before the move
    validate = next(c for c in result.commands if "sshd -t -f" in c)
    assert f"rm -f {STAGED}" in validate and "exit 1" in validate
    assert not any("restart" in c for c in result.commands), "ssh must be reloaded, never restarted"


def test_drop_in_lines() -> None:
    """What ssh-audit judges: one ed25519 host key, no compression, the algorithm lists."""
    lines = dict(line.split(" ", 1) for line in DROPIN_OPENSSH_10_0.splitlines() if line and line[0] != "#")
    assert lines["HostKey"] == HOST_KEY == "/etc/ssh/ssh_host_ed25519_key"
    assert (lines["Compression"], lines["PerSourceMaxStartups"]) == ("no", "5")
    assert lines["KexAlgorithms"].split(",") == KEX
    assert lines["Ciphers"].split(",") == CIPHERS
    assert lines["MACs"].split(",") == MACS


def test_key_exchanges_per_openssh_version() -> None:
    assert kex_for_version((9, 2), KEX) == ["sntrup761x25519-sha512@openssh.com", "curve25519-sha256@libssh.org"]
    assert kex_for_version((9, 8), KEX) == kex_for_version((9, 2), KEX)
    assert kex_for_version((9, 9), KEX) == KEX
    assert kex_for_version((10, 0), KEX) == KEX
    # no finite-field Diffie-Hellman at all: /etc/ssh/moduli (2048-bit groups on Debian 13) is never used
    assert not [name for name in KEX if name.startswith("diffie-hellman")]


def test_missing_host_key_is_generated_before_the_drop_in_that_names_it() -> None:
    result = run(sshd_state(host_key=False))
    assert without_validation(result.commands) == [KEYGEN, *fresh_commands(DROPIN_OPENSSH_9_2)]


def test_missing_host_key_under_a_live_drop_in_is_generated_and_ssh_reloaded() -> None:
    result = run(sshd_state(dropin=live(DROPIN_OPENSSH_9_2), host_key=False))
    assert result.commands == [KEYGEN, RELOAD]


def test_validator_checks_the_effective_values_in_the_real_read_order() -> None:
    result = run(sshd_state(), ssh_permit_root_login="prohibit-password")
    validate = next(c for c in result.commands if "sshd -t -f" in c)
    assert "sshd -T -f" in validate
    assert "/etc/ssh/sshd_config" in validate  # copy of the real main file, staged include inserted
    assert "'permitrootlogin|prohibit-password|without-password'" in validate
    assert "passwordauthentication|no" in validate
    assert "hostkey|/etc/ssh/ssh_host_ed25519_key" in validate and "compression|no" in validate
    # every HostKey line counts (joined), not only the first
    assert "paste -sd, -" in validate


@pytest.mark.parametrize(("version", "content"), [(DEBIAN_12, DROPIN_OPENSSH_9_2), (DEBIAN_13, DROPIN_OPENSSH_10_0)])
def test_no_change_is_a_noop_with_one_fact_read(version: str, content: str) -> None:
    result = run(sshd_state(dropin=live(content), version=version))
    assert result.commands == []
    assert len(result.fact_reads) == 1
    assert result.noops


def test_mode_drift_only_fixes_mode_without_reload() -> None:
    result = run(sshd_state(dropin=live(DROPIN_OPENSSH_9_2, mode="644")))
    assert result.commands == [f"chmod 600 {DROPIN}"]


@pytest.mark.parametrize(
    ("effective", "reported"),
    [
        ({"passwordauthentication": "yes"}, "passwordauthentication"),
        # a HostKey line in the main file (or another drop-in) adds the ECDSA key back
        ({"hostkey": "/etc/ssh/ssh_host_ecdsa_key,/etc/ssh/ssh_host_ed25519_key"}, "ssh_host_ecdsa_key"),
        ({"compression": "yes"}, "compression"),
    ],
)
def test_main_file_override_is_reported(effective: dict[str, str], reported: str) -> None:
    state = sshd_state(dropin=live(DROPIN_OPENSSH_9_2))
    state["effective"].update(effective)
    with pytest.raises(OperationError, match=reported):
        run(state)


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
        ({"ssh_per_source_max_startups": 0}, "ssh_per_source_max_startups=0: a positive integer"),
        # lists pyinfra's paramiko could not negotiate: the next run could not log in
        (
            {"ssh_kex_algorithms": ["mlkem768x25519-sha256", "sntrup761x25519-sha512@openssh.com"]},
            "ssh_kex_algorithms: none of ['sntrup761x25519-sha512@openssh.com'] is offered by paramiko",
        ),
        ({"ssh_ciphers": ["chacha20-poly1305@openssh.com"]}, "ssh_ciphers: none of ['chacha20-poly1305@openssh.com']"),
        ({"ssh_macs": ["umac-128-etm@openssh.com"]}, "ssh_macs: none of ['umac-128-etm@openssh.com'] is offered"),
    ],
)
def test_bad_values_refused_before_any_fact_or_operation(data: dict[str, Any], message: str) -> None:
    with pytest.raises(DeployError, match=re.escape(message)):
        refused(**data)


def test_checks_are_pure() -> None:
    """`spectra validate` runs them on plain data, with no host and no pyinfra context."""
    defaults = {key: owner.default for key, owner in owners().items()}
    assert COMPONENT.problems(defaults) == []
    assert COMPONENT.problems({**defaults, "ssh_log_level": "verbose"}) == []
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
    assert result.fact_reads == [("facts.security.SshdState", {"dropin": DROPIN, "host_key": HOST_KEY})]
    assert result.commands == run(sshd_state()).commands


def test_algorithms_are_supported_by_pyinfras_ssh_client() -> None:
    """The deploy's next run connects with paramiko: on the oldest OpenSSH (9.2) every list must share an
    algorithm with it, and so must the one host key type."""
    from paramiko import Transport

    offered = hardening_ssh.paramiko_algorithms()
    assert set(kex_for_version((9, 2), KEX)) & set(offered["ssh_kex_algorithms"]) == {"curve25519-sha256@libssh.org"}
    assert set(CIPHERS) & set(offered["ssh_ciphers"])
    assert set(MACS) & set(offered["ssh_macs"])  # paramiko negotiates a MAC even for AES-GCM
    assert "ssh-ed25519" in getattr(Transport, "_preferred_keys")  # noqa: B009 (private, not in the stubs)


def test_sshd_state_fact_parses_output() -> None:
    fact = hardening_ssh.SshdState()
    parsed = fact.process(
        [
            f"M|{DROPIN}",
            "K\tno",
            "V\t1:9.2p1-2+deb12u3",
            "E\tpermitrootlogin without-password",
            "E\tpasswordauthentication no",
            "E\thostkey /etc/ssh/ssh_host_rsa_key",
            "E\thostkey /etc/ssh/ssh_host_ed25519_key",
        ]
    )
    assert parsed["dropin"] is None
    assert parsed["version"] == (9, 2)
    assert parsed["host_key"] is False
    assert parsed["effective"] == {
        "permitrootlogin": "without-password",
        "passwordauthentication": "no",
        "hostkey": "/etc/ssh/ssh_host_rsa_key,/etc/ssh/ssh_host_ed25519_key",
    }
    assert fact.process(["K\tyes"])["host_key"] is True
    assert fact.process([])["host_key"] is None  # not asked about


def test_sshd_state_fact_command_asks_about_the_host_key() -> None:
    command = hardening_ssh.SshdState().command(DROPIN, host_key=HOST_KEY).get_raw_value()
    assert f"if [ -s {HOST_KEY} ]; then printf 'K\\tyes\\n'; else printf 'K\\tno\\n'; fi;" in command
    assert "hostkey|compression|persourcemaxstartups" in command
