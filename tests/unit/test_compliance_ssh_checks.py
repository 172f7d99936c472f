"""The SSH checks that follow ssh-audit (post-quantum key exchange, host keys, compression) on fake hosts."""

from __future__ import annotations

import pytest

from compliance import checks
from compliance.model import failed, passed
from tests.unit.compliance_fakes import Result, converged_control_plane, probe

pytestmark = pytest.mark.unit


def sshd_t(**changes: str | None) -> str:
    """The converged fake's ``sshd -T`` with lines replaced (value) or removed (None); ``hostkey`` may hold
    several keys, one line each, joined with ","."""
    lines = [line for line in converged_control_plane().commands["sshd -T"].stdout.splitlines()]
    kept = [line for line in lines if line.split(" ", 1)[0] not in changes]
    for key, value in changes.items():
        if value is not None:
            kept += [f"{key} {part}" for part in (value.split(",") if key == "hostkey" else [value])]
    return "\n".join(kept) + "\n"


def outcome(check_id: str, **changes: str | None):
    node = converged_control_plane()
    node.commands["sshd -T"] = Result(sshd_t(**changes))
    return checks.run_check(check_id, probe(node))


def test_converged_host_passes_the_three_checks() -> None:
    assert outcome("SPX-SSH-011").status == "pass"
    assert outcome("SPX-SSH-012") == passed("hostkey /etc/ssh/ssh_host_ed25519_key")
    assert outcome("SPX-SSH-013") == passed("compression no")


@pytest.mark.parametrize(
    "kex",
    [
        "sntrup761x25519-sha512@openssh.com,curve25519-sha256@libssh.org",  # Debian 12 as deployed
        "mlkem768x25519-sha256,sntrup761x25519-sha512,sntrup761x25519-sha512@openssh.com,curve25519-sha256@libssh.org",
    ],
)
def test_post_quantum_exchange_passes_on_both_releases(kex: str) -> None:
    assert outcome("SPX-SSH-011", kexalgorithms=kex).status == "pass"


def test_no_post_quantum_exchange_fails() -> None:
    assert outcome("SPX-SSH-011", kexalgorithms="curve25519-sha256,diffie-hellman-group16-sha512") == failed(
        "kexalgorithms curve25519-sha256,diffie-hellman-group16-sha512 has none of "
        "sntrup761x25519-sha512@openssh.com, sntrup761x25519-sha512, mlkem768x25519-sha256"
    )
    assert outcome("SPX-SSH-011", kexalgorithms=None) == failed("sshd -T prints no kexalgorithms")


def test_an_ecdsa_or_dsa_host_key_fails() -> None:
    # Debian's default: every key ssh-keygen -A made (sshd -T prints one hostkey line each)
    default = "/etc/ssh/ssh_host_rsa_key,/etc/ssh/ssh_host_ecdsa_key,/etc/ssh/ssh_host_ed25519_key"
    assert outcome("SPX-SSH-012", hostkey=default) == failed("hostkey /etc/ssh/ssh_host_ecdsa_key is served")
    assert outcome("SPX-SSH-012", hostkey="/etc/ssh/ssh_host_dsa_key") == failed(
        "hostkey /etc/ssh/ssh_host_dsa_key is served"
    )
    assert outcome("SPX-SSH-012", hostkey=None) == failed("sshd -T prints no hostkey")


def test_compression_on_fails() -> None:
    # OpenSSH's default (sshd -T prints "delayed" on old releases, "yes" on new ones)
    assert outcome("SPX-SSH-013", compression="yes") == failed("compression yes (want no)")
    assert outcome("SPX-SSH-013", compression="delayed") == failed("compression delayed (want no)")
