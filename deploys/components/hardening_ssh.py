"""SSH server hardening: one drop-in that sorts first, validated with ``sshd -t`` before it goes live.

- Keys only (no password, no keyboard-interactive), ``PermitRootLogin prohibit-password`` by default
  (``no`` on request), modern key exchange / ciphers / MACs that both Debian 12 (OpenSSH 9.2) and
  Debian 13 (OpenSSH 10.0) have; the post-quantum ML-KEM exchange is added where OpenSSH >= 9.9.
- The drop-in is staged next to the live one, checked with ``sshd -t`` and ``sshd -T`` against a
  temporary main file that includes it ahead of the real ``/etc/ssh/sshd_config`` (so the check also
  proves no earlier line of the main file overrides a hardened value), then renamed into place.
- ``ssh`` is then *reloaded* (SIGHUP), never restarted: sessions already open, including the one
  pyinfra works through, stay up.
- Refuses ``PermitRootLogin no`` when the deploy itself logs in as root (or cannot tell), and refuses to
  turn password logins off while the deploy logs in with a password, unless
  ``ssh_allow_root_lockout`` says the operator has another way in.
"""

from __future__ import annotations

from collections.abc import Mapping as _Mapping
from typing import Any

from pyinfra import host
from pyinfra.api import DeployError, OperationError, StringCommand, deploy, operation

from deploys.component import Component
from deploys.operations.config_files import (
    ConfigFile,
    content_changes,
    install_file_commands,
    render_template,
    shell_script,
)
from deploys.operations.managed import fresh
from deploys.prepare import FactRequest, component_data, prepared_fact
from facts.security import SshdState

# Algorithms present in OpenSSH 9.2 (Debian 12) and 10.0 (Debian 13), and supported by paramiko 3.x
# (pyinfra's SSH client), so the deploy never locks itself out of its next run.
KEX_COMMON = [
    "sntrup761x25519-sha512@openssh.com",
    "curve25519-sha256",
    "curve25519-sha256@libssh.org",
    "diffie-hellman-group16-sha512",
    "diffie-hellman-group18-sha512",
    "diffie-hellman-group-exchange-sha256",
]
CIPHERS = [
    "chacha20-poly1305@openssh.com",
    "aes256-gcm@openssh.com",
    "aes128-gcm@openssh.com",
    "aes256-ctr",
    "aes192-ctr",
    "aes128-ctr",
]
MACS = [
    "hmac-sha2-512-etm@openssh.com",
    "hmac-sha2-256-etm@openssh.com",
    "umac-128-etm@openssh.com",
]

DEFAULTS: dict[str, Any] = {
    "ssh_hardening_enabled": True,  # manage the sshd hardening drop-in at all
    # Drop-in path: must sort before every other file in sshd_config.d (sshd keeps the first value)
    "ssh_dropin_path": "/etc/ssh/sshd_config.d/00-spectra-hardening.conf",
    "ssh_permit_root_login": "prohibit-password",  # "prohibit-password" (keys only) or "no"
    "ssh_allow_root_lockout": False,  # allow "no"/no passwords even though the deploy logs in that way
    "ssh_max_auth_tries": 3,  # MaxAuthTries
    "ssh_login_grace_time": 30,  # LoginGraceTime, seconds
    "ssh_allow_tcp_forwarding": "no",  # AllowTcpForwarding: "no", "local", "remote" or "yes"
    "ssh_allow_agent_forwarding": False,  # AllowAgentForwarding
    "ssh_client_alive_interval": 300,  # ClientAliveInterval, seconds
    "ssh_client_alive_count_max": 3,  # ClientAliveCountMax
    "ssh_max_sessions": 10,  # MaxSessions per connection
    "ssh_max_startups": "10:30:60",  # MaxStartups (start:rate:full) against unauthenticated floods
    "ssh_log_level": "VERBOSE",  # LogLevel; VERBOSE logs the key fingerprint of each login
    "ssh_kex_algorithms": KEX_COMMON,  # KexAlgorithms for every supported OpenSSH
    # Added in front of ssh_kex_algorithms where the installed OpenSSH is at least 9.9 (Debian 13)
    "ssh_kex_algorithms_mlkem": ["mlkem768x25519-sha256"],
    "ssh_ciphers": CIPHERS,  # Ciphers
    "ssh_macs": MACS,  # MACs
}

PERMIT_ROOT_LOGIN_VALUES = ("prohibit-password", "no")
TCP_FORWARDING_VALUES = ("no", "local", "remote", "yes")

# What `sshd -T` prints for the values that must be in effect (9.2 prints prohibit-password as
# "without-password")
EFFECTIVE_ALIASES = {"prohibit-password": ("prohibit-password", "without-password")}

# Given $1 = staged drop-in, then "key|value1|value2" words. A temporary copy of the real main file,
# with the staged drop-in included just before its "Include sshd_config.d/*.conf" line, goes through
# sshd -t (syntax) and sshd -T (effective values in the real read order, so a line of the main file
# above the include that overrides the hardening is caught here, before anything goes live).
_VALIDATE_SCRIPT = r"""
staged=$1; shift
main="$staged.main"
PATH="$PATH:/usr/sbin"
awk -v staged="$staged" '
    !done && tolower($0) ~ /^[ \t]*include[ \t]+(\/etc\/ssh\/)?sshd_config\.d\/\*\.conf[ \t]*$/ {
        print "Include " staged; done = 1
    }
    { print }
    END { if (!done) exit 3 }
' /etc/ssh/sshd_config > "$main"
case $? in
    0) ;;
    3) rm -f "$main"; echo "/etc/ssh/sshd_config does not include sshd_config.d/*.conf" >&2; exit 1 ;;
    *) rm -f "$main"; echo "cannot read /etc/ssh/sshd_config" >&2; exit 1 ;;
esac
if ! sshd -t -f "$main"; then
    rm -f "$main"; echo "sshd -t rejected the new drop-in" >&2; exit 1
fi
effective=$(sshd -T -f "$main") || { rm -f "$main"; echo "sshd -T failed" >&2; exit 1; }
rm -f "$main"
for want in "$@"; do
    key=${want%%|*}; values=${want#*|}
    line=$(printf '%s\n' "$effective" | grep -i "^$key " | head -n 1)
    value=${line#* }
    ok=no
    IFS='|'; for candidate in $values; do [ "$value" = "$candidate" ] && ok=yes; done; unset IFS
    if [ "$ok" != yes ]; then
        echo "sshd would use '$key $value', not '$values': a line of /etc/ssh/sshd_config above its" \
             "sshd_config.d include overrides the hardening" >&2
        exit 1
    fi
done
"""


def expected_effective(permit_root_login: str) -> dict[str, tuple[str, ...]]:
    """The security-critical values ``sshd -T`` must report once the drop-in is live."""
    return {
        "passwordauthentication": ("no",),
        "kbdinteractiveauthentication": ("no",),
        "permitemptypasswords": ("no",),
        "pubkeyauthentication": ("yes",),
        "permitrootlogin": EFFECTIVE_ALIASES.get(permit_root_login, (permit_root_login,)),
    }


def kex_for_version(version: tuple[int, int] | None, common: list[str], mlkem: list[str]) -> list[str]:
    """ML-KEM hybrid key exchange exists from OpenSSH 9.9 on; older servers reject its name."""
    if version is not None and version >= (9, 9):
        return [*mlkem, *[name for name in common if name not in mlkem]]
    return list(common)


def sshd_validator(expected: dict[str, tuple[str, ...]]):
    words = [f"{key}|{'|'.join(values)}" for key, values in expected.items()]

    def validate(staged: str) -> StringCommand:
        return shell_script(_VALIDATE_SCRIPT, staged, *words, name="spectra-sshd-check")

    return validate


def check_lockout(data: dict[str, Any]) -> None:
    """Refuse settings that would lock the deploy's own login method out of the next run."""
    if data["ssh_allow_root_lockout"]:
        return
    login_user = data.get("ssh_user")
    if data["ssh_permit_root_login"] == "no" and (login_user is None or login_user == "root"):
        who = "as root" if login_user == "root" else "without ssh_user set (it may be root)"
        raise DeployError(
            f"ssh_permit_root_login='no' refused on {host.name}: this deploy connects {who}, so the next "
            "run could not log in. Connect as a sudo user (ssh_user + _sudo), or set "
            "ssh_allow_root_lockout=True if another way in exists."
        )
    if data.get("ssh_password"):
        raise DeployError(
            f"SSH hardening turns password logins off, but {host.name} is reached with ssh_password: "
            "install a key first, or set ssh_allow_root_lockout=True if another way in exists."
        )


def validate_settings(data: dict[str, Any]) -> None:
    if data["ssh_permit_root_login"] not in PERMIT_ROOT_LOGIN_VALUES:
        raise DeployError(
            f"ssh_permit_root_login must be one of {PERMIT_ROOT_LOGIN_VALUES}, not {data['ssh_permit_root_login']!r}"
        )
    if data["ssh_allow_tcp_forwarding"] not in TCP_FORWARDING_VALUES:
        raise DeployError(
            f"ssh_allow_tcp_forwarding must be one of {TCP_FORWARDING_VALUES}, not {data['ssh_allow_tcp_forwarding']!r}"
        )
    path = data["ssh_dropin_path"]
    if not (path.startswith("/etc/ssh/sshd_config.d/") and path.endswith(".conf") and "/" not in path[23:]):
        raise DeployError(f"ssh_dropin_path must be /etc/ssh/sshd_config.d/<name>.conf, not {path!r}")
    for key in ("ssh_max_auth_tries", "ssh_login_grace_time", "ssh_client_alive_interval"):
        if not isinstance(data[key], int) or data[key] < 1:
            raise DeployError(f"{key} must be a positive integer, not {data[key]!r}")


@operation()
def sshd_dropin(
    path: str,
    settings: dict[str, Any],
    kex_common: list[str],
    kex_mlkem: list[str],
    current: dict[str, Any] | None = None,
):
    """
    Render, validate (sshd -t / sshd -T) and install the hardening drop-in, then reload ssh.

    + path: the drop-in path (sorts first in /etc/ssh/sshd_config.d)
    + settings: template values other than the algorithm lists
    + kex_common: key exchanges every supported OpenSSH has
    + kex_mlkem: key exchanges added in front when the installed OpenSSH is 9.9 or newer
    + current: ``SshdState`` read at prepare time (read again when an earlier operation changed the host)
    """
    state = fresh(current, SshdState, dropin=path)
    version = state.get("version")
    if version is None:
        raise OperationError(
            f"openssh-server is not installed on {host.name} (dpkg-query found no version): "
            "refusing to write an sshd configuration nothing would read"
        )

    content = render_template(
        "etc/ssh/sshd_config.d/00-spectra-hardening.conf.j2",
        openssh_version=f"{version[0]}.{version[1]}",
        kex_algorithms=kex_for_version(version, kex_common, kex_mlkem),
        **settings,
    )
    expected = expected_effective(settings["permit_root_login"])
    file = ConfigFile(path=path, content=content, mode="0600", validate=sshd_validator(expected))
    current = state.get("dropin")

    if not content_changes(file, current):
        # Content is ours: still prove nothing read before the include overrides it.
        effective = state.get("effective") or {}
        wrong = {key: effective.get(key) for key, allowed in expected.items() if effective.get(key) not in allowed}
        if wrong:
            raise OperationError(
                f"sshd on {host.name} would use {wrong} although {path} sets otherwise: a line in "
                "/etc/ssh/sshd_config before its 'Include /etc/ssh/sshd_config.d/*.conf' overrides the "
                "hardening; remove it"
            )

    commands = list(install_file_commands(file, current))
    if not commands:
        host.noop(f"{path} already hardened and in effect")
        return
    yield from commands
    if content_changes(file, current):
        # Reload = SIGHUP: the listener re-reads its config; open sessions (this one) stay up.
        yield StringCommand("if systemctl is-active --quiet ssh.service; then systemctl reload ssh.service; fi")


def fact_requests() -> list[FactRequest]:
    """What :func:`ssh_hardening` reads at prepare time, for node.py to read with other components' facts."""
    data = component_data(DEFAULTS)
    return [(SshdState, {"dropin": data["ssh_dropin_path"]})] if data["ssh_hardening_enabled"] else []


@deploy("SSH hardening", data_defaults=DEFAULTS)
def ssh_hardening() -> None:
    """Harden sshd through a validated drop-in; never cut off the session doing the work."""
    data = {key: host.data.get(key) for key in DEFAULTS}
    if not data["ssh_hardening_enabled"]:
        host.noop("ssh hardening disabled (ssh_hardening_enabled=False)")
        return
    data["ssh_user"] = host.data.get("ssh_user")
    data["ssh_password"] = host.data.get("ssh_password")
    validate_settings(data)
    check_lockout(data)

    settings = {
        "permit_root_login": data["ssh_permit_root_login"],
        "max_auth_tries": data["ssh_max_auth_tries"],
        "login_grace_time": data["ssh_login_grace_time"],
        "allow_tcp_forwarding": data["ssh_allow_tcp_forwarding"],
        "allow_agent_forwarding": "yes" if data["ssh_allow_agent_forwarding"] else "no",
        "client_alive_interval": data["ssh_client_alive_interval"],
        "client_alive_count_max": data["ssh_client_alive_count_max"],
        "max_sessions": data["ssh_max_sessions"],
        "max_startups": data["ssh_max_startups"],
        "log_level": data["ssh_log_level"],
        "ciphers": list(data["ssh_ciphers"]),
        "macs": list(data["ssh_macs"]),
    }
    sshd_dropin(
        name="Install validated sshd hardening drop-in, reload ssh if it changed",
        path=data["ssh_dropin_path"],
        settings=settings,
        kex_common=list(data["ssh_kex_algorithms"]),
        kex_mlkem=list(data["ssh_kex_algorithms_mlkem"]),
        current=prepared_fact(SshdState, dropin=data["ssh_dropin_path"]),
    )


def should_run(settings: _Mapping[str, Any]) -> bool:
    return bool(settings["ssh_hardening_enabled"])


def _fact_requests(settings: _Mapping[str, Any]) -> list[FactRequest]:
    return fact_requests()


COMPONENT = Component(
    name="ssh_hardening",
    defaults=DEFAULTS,
    deploy=ssh_hardening,
    should_run=should_run,
    fact_requests=_fact_requests,
)
