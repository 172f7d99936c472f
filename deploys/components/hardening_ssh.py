"""SSH server hardening: one drop-in that sorts first, validated with ``sshd -t`` before it goes live.

- Keys only (no password, no keyboard-interactive), ``PermitRootLogin prohibit-password`` by default
  (``no`` on request).
- Cryptography chosen against ssh-audit 3.9.0: one host key (ed25519; the NIST-curve ECDSA and the RSA key
  are no longer served), post-quantum hybrid key exchanges first (``mlkem768x25519-sha256`` and
  ``sntrup761x25519-sha512`` only where the installed OpenSSH, read from the ``SshdState`` fact, is 9.9 or
  newer), no finite-field Diffie-Hellman (so ``/etc/ssh/moduli`` and its 2048-bit groups are never used),
  AEAD/CTR ciphers with encrypt-then-MAC MACs, ``Compression no``, ``PerSourceMaxStartups``. The one
  exchange without post-quantum protection left is ``curve25519-sha256@libssh.org``: paramiko (pyinfra's
  SSH client) has no other modern one, and the deploy's next run must log in. ``check_client`` refuses
  algorithm lists paramiko could not negotiate.
- A missing ed25519 host key is generated (``ssh-keygen``) before the drop-in that names it is checked.
- The drop-in is staged next to the live one, checked with ``sshd -t`` and ``sshd -T`` against a
  temporary main file that includes it ahead of the real ``/etc/ssh/sshd_config`` (so the check also
  proves no earlier line of the main file overrides a hardened value, nor adds a host key), then renamed
  into place.
- ``ssh`` is then *reloaded* (SIGHUP: sshd re-executes and reads its config and host keys again), never
  restarted, and only when the drop-in changed or a key was generated: sessions already open, including
  the one pyinfra works through, stay up.
- Refuses ``PermitRootLogin no`` when the deploy itself logs in as root (or cannot tell), and refuses to
  turn password logins off while the deploy logs in with a password, unless
  ``ssh_allow_root_lockout`` says the operator has another way in.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from pyinfra import host
from pyinfra.api import OperationError, QuoteString, StringCommand, deploy, operation

from deploys.component import Component
from deploys.operations.config_files import (
    ConfigFile,
    content_changes,
    install_file_commands,
    render_template,
    shell_script,
)
from deploys.operations.managed import fresh
from deploys.prepare import FactRequest, prepared_facts
from deploys.settings import Settings
from facts.security import SshdState

# Key exchanges in order of preference. ssh-audit 3.9.0 warns about none of them but the last:
# curve25519-sha256@libssh.org has no post-quantum protection, but paramiko 3.x (pyinfra's SSH client: the
# deploy's next login) has no post-quantum exchange, and this is the modern one it has (it does not know the
# RFC name curve25519-sha256). Finite-field DH (group16/18, group-exchange) is left out: no post-quantum
# protection either, costly to compute (DHEat), and with it /etc/ssh/moduli (2048-bit groups on Debian 13).
KEX = [
    "mlkem768x25519-sha256",
    "sntrup761x25519-sha512",
    "sntrup761x25519-sha512@openssh.com",
    "curve25519-sha256@libssh.org",
]
# The OpenSSH release that brought a key exchange, for those newer than the oldest supported OpenSSH
# (9.2, Debian 12): older servers refuse the name, so they are left out there.
KEX_SINCE: dict[str, tuple[int, int]] = {
    "mlkem768x25519-sha256": (9, 9),
    "sntrup761x25519-sha512": (9, 9),
}
OLDEST_OPENSSH = (9, 2)
# Larger keys first, in the order of ssh-audit's "Hardened Debian 12/13" policies
CIPHERS = [
    "chacha20-poly1305@openssh.com",
    "aes256-gcm@openssh.com",
    "aes256-ctr",
    "aes192-ctr",
    "aes128-gcm@openssh.com",
    "aes128-ctr",
]
MACS = [
    "hmac-sha2-512-etm@openssh.com",
    "hmac-sha2-256-etm@openssh.com",
    "umac-128-etm@openssh.com",
]
# The one host key sshd serves: ed25519 (paramiko and OpenSSH verify it; ECDSA uses NIST curves, and an
# RSA key would only add a second identity to pin).
HOST_KEY = "/etc/ssh/ssh_host_ed25519_key"

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
    # PerSourceMaxStartups: unauthenticated connections one source address may hold at once (DHEat)
    "ssh_per_source_max_startups": 5,
    "ssh_log_level": "VERBOSE",  # LogLevel; VERBOSE logs the key fingerprint of each login
    # KexAlgorithms, by preference; names the installed OpenSSH is too old for (KEX_SINCE) are left out
    "ssh_kex_algorithms": KEX,
    "ssh_ciphers": CIPHERS,  # Ciphers
    "ssh_macs": MACS,  # MACs
}

PERMIT_ROOT_LOGIN_VALUES = ("prohibit-password", "no")
TCP_FORWARDING_VALUES = ("no", "local", "remote", "yes")
CHOICES: dict[str, tuple[Any, ...]] = {
    "ssh_permit_root_login": PERMIT_ROOT_LOGIN_VALUES,
    "ssh_allow_tcp_forwarding": TCP_FORWARDING_VALUES,
}
# sshd reads LogLevel without regard to case, so these are checked in check(), not as CHOICES
LOG_LEVELS = ("QUIET", "FATAL", "ERROR", "INFO", "VERBOSE", "DEBUG", "DEBUG1", "DEBUG2", "DEBUG3")

DROPIN_DIR = "/etc/ssh/sshd_config.d/"
POSITIVE_INT_KEYS = (
    "ssh_max_auth_tries",
    "ssh_login_grace_time",
    "ssh_client_alive_interval",
    "ssh_per_source_max_startups",
)
ALGORITHM_KEYS = ("ssh_kex_algorithms", "ssh_ciphers", "ssh_macs")
_ALGORITHM = re.compile(r"[a-z0-9][a-z0-9@.+-]*")
_MAX_STARTUPS = re.compile(r"[0-9]+(:[0-9]+:[0-9]+)?")

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
    # every line of a repeated keyword (HostKey), once each: the live drop-in, still read through the
    # include, names the same key as the staged one
    value=$(printf '%s\n' "$effective" | grep -i "^$key " | sed 's/^[^ ]* //' | awk '!seen[$0]++' | paste -sd, -)
    ok=no
    IFS='|'; for candidate in $values; do [ "$value" = "$candidate" ] && ok=yes; done; unset IFS
    if [ "$ok" != yes ]; then
        echo "sshd would use '$key $value', not '$values': a line of /etc/ssh/sshd_config above its" \
             "sshd_config.d include overrides the hardening (or adds to it: HostKey)" >&2
        exit 1
    fi
done
"""


def expected_effective(permit_root_login: str) -> dict[str, tuple[str, ...]]:
    """The security-critical values ``sshd -T`` must report once the drop-in is live (``hostkey``: every
    HostKey line, joined with ",", so a key added by another file is caught)."""
    return {
        "passwordauthentication": ("no",),
        "kbdinteractiveauthentication": ("no",),
        "permitemptypasswords": ("no",),
        "pubkeyauthentication": ("yes",),
        "permitrootlogin": EFFECTIVE_ALIASES.get(permit_root_login, (permit_root_login,)),
        "hostkey": (HOST_KEY,),
        "compression": ("no",),
    }


def kex_for_version(version: tuple[int, int], names: list[str]) -> list[str]:
    """``names`` without those the installed OpenSSH ``version`` does not know (sshd refuses them)."""
    return [name for name in names if KEX_SINCE.get(name, OLDEST_OPENSSH) <= version]


def paramiko_algorithms() -> dict[str, tuple[str, ...]]:
    """What the deploy's SSH client (paramiko, as installed) offers, per setting."""
    from paramiko import Transport

    # Transport's class attributes: what a client Transport offers unless told otherwise (pyinfra does not)
    lists = {"ssh_kex_algorithms": "_preferred_kex", "ssh_ciphers": "_preferred_ciphers", "ssh_macs": "_preferred_macs"}
    return {key: tuple(getattr(Transport, attribute)) for key, attribute in lists.items()}


def sshd_validator(expected: dict[str, tuple[str, ...]]):
    words = [f"{key}|{'|'.join(values)}" for key, values in expected.items()]

    def validate(staged: str) -> StringCommand:
        return shell_script(_VALIDATE_SCRIPT, staged, *words, name="spectra-sshd-check")

    return validate


def check_lockout(settings: Mapping[str, Any]) -> list[str]:
    """Settings that would lock the deploy's own login method out of its next run (pure: ``ssh_user`` and
    ``ssh_password`` are host data, no connection needed)."""
    if settings["ssh_allow_root_lockout"]:
        return []
    problems = []
    login_user = settings["ssh_user"]
    if settings["ssh_permit_root_login"] == "no" and (login_user is None or login_user == "root"):
        who = "as root" if login_user == "root" else "without ssh_user set (it may be root)"
        problems.append(
            f"ssh_permit_root_login='no': refused, this deploy connects {who}, so the next run could not log "
            "in. Connect as a sudo user (ssh_user + _sudo), or set ssh_allow_root_lockout=True if another way "
            "in exists"
        )
    if settings["ssh_password"]:
        # the value is a secret: named, never shown
        problems.append(
            "ssh_password is set: SSH hardening turns password logins off, install a key first, or set "
            "ssh_allow_root_lockout=True if another way in exists"
        )
    return problems


def check_client(settings: Mapping[str, Any]) -> list[str]:
    """Algorithm lists the deploy's own SSH client could not negotiate: the next run could not connect. Pure
    (paramiko's lists, no host). Key exchanges count only where the oldest supported OpenSSH has them."""
    problems = []
    for key, offered in paramiko_algorithms().items():
        names = settings[key]
        if not isinstance(names, list | tuple):
            continue  # check() reports the format
        if key == "ssh_kex_algorithms":
            names = kex_for_version(OLDEST_OPENSSH, list(names))
        if not set(names) & set(offered):
            problems.append(
                f"{key}: none of {list(names)} is offered by paramiko (pyinfra's SSH client, which offers "
                f"{', '.join(offered)}), so the next run could not connect; keep one of them"
            )
    return problems


def check(settings: Mapping[str, Any]) -> list[str]:
    """Formats sshd and the drop-in's place depend on (pure: no host needed)."""
    problems = []
    path = str(settings["ssh_dropin_path"])
    name = path.removeprefix(DROPIN_DIR)
    if not (path.startswith(DROPIN_DIR) and name.endswith(".conf") and "/" not in name):
        problems.append(f"ssh_dropin_path={path!r}: must be {DROPIN_DIR}<name>.conf")
    for key in POSITIVE_INT_KEYS:
        value = settings[key]
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            problems.append(f"{key}={value!r}: a positive integer")
    for key in ("ssh_client_alive_count_max", "ssh_max_sessions"):
        value = settings[key]
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            problems.append(f"{key}={value!r}: an integer, 0 or more")
    if str(settings["ssh_log_level"]).upper() not in LOG_LEVELS:
        problems.append(f"ssh_log_level={settings['ssh_log_level']!r}: one of {', '.join(LOG_LEVELS)}")
    if not _MAX_STARTUPS.fullmatch(str(settings["ssh_max_startups"])):
        problems.append(f"ssh_max_startups={settings['ssh_max_startups']!r}: start:rate:full such as 10:30:60")
    for key in ALGORITHM_KEYS:
        names = settings[key]
        if not isinstance(names, list | tuple) or not names:
            problems.append(f"{key}={names!r}: a list of algorithm names")
            continue
        for algorithm in names:
            if not _ALGORITHM.fullmatch(str(algorithm)):
                problems.append(f"{key}: {algorithm!r} is not an algorithm name")
    return problems


@operation()
def sshd_dropin(
    path: str,
    settings: dict[str, Any],
    kex_algorithms: list[str],
    current: dict[str, Any] | None = None,
):
    """
    Render, validate (sshd -t / sshd -T) and install the hardening drop-in, then reload ssh.

    + path: the drop-in path (sorts first in /etc/ssh/sshd_config.d)
    + settings: template values other than the key exchanges
    + kex_algorithms: key exchanges by preference; those the installed OpenSSH lacks are left out
    + current: ``SshdState`` read at prepare time (read again when an earlier operation changed the host)
    """
    state = fresh(current, SshdState, dropin=path, host_key=HOST_KEY)
    version = state.get("version")
    if version is None:
        raise OperationError(
            f"openssh-server is not installed on {host.name} (dpkg-query found no version): "
            "refusing to write an sshd configuration nothing would read"
        )

    content = render_template(
        "etc/ssh/sshd_config.d/00-spectra-hardening.conf.j2",
        openssh_version=f"{version[0]}.{version[1]}",
        kex_algorithms=kex_for_version(version, kex_algorithms),
        host_key=HOST_KEY,
        **settings,
    )
    expected = expected_effective(settings["permit_root_login"])
    file = ConfigFile(path=path, content=content, mode="0600", validate=sshd_validator(expected))
    current = state.get("dropin")
    make_key = not state.get("host_key")

    if not content_changes(file, current) and not make_key:
        # Content is ours: still prove nothing read before the include overrides it.
        effective = state.get("effective") or {}
        wrong = {key: effective.get(key) for key, allowed in expected.items() if effective.get(key) not in allowed}
        if wrong:
            raise OperationError(
                f"sshd on {host.name} would use {wrong} although {path} sets otherwise: a line in "
                "/etc/ssh/sshd_config before its 'Include /etc/ssh/sshd_config.d/*.conf' overrides the "
                "hardening (or another file adds a HostKey); remove it"
            )

    commands = list(install_file_commands(file, current))
    if make_key:
        # sshd cannot start without the one key the drop-in names. A new key is a new host identity:
        # clients that knew the old one will refuse it until their known_hosts is updated.
        key = QuoteString(HOST_KEY)
        keygen = StringCommand(
            "rm", "-f", key, QuoteString(f"{HOST_KEY}.pub"), "&&",
            "ssh-keygen", "-q", "-t", "ed25519", "-N", "''", "-C", "''", "-f", key, "</dev/null",
        )  # fmt: skip
        commands.insert(0, keygen)
    if not commands:
        host.noop(f"{path} already hardened and in effect")
        return
    yield from commands
    if content_changes(file, current) or make_key:
        # Reload = SIGHUP: sshd re-executes and reads its config and host keys again; open sessions (this
        # one) stay up.
        yield StringCommand("if systemctl is-active --quiet ssh.service; then systemctl reload ssh.service; fi")


def should_run(settings: Mapping[str, Any]) -> bool:
    return bool(settings["ssh_hardening_enabled"])


def fact_requests(settings: Mapping[str, Any]) -> list[FactRequest]:
    """What :func:`ssh_hardening` reads at prepare time, for node.py to read with other components' facts."""
    return [(SshdState, {"dropin": settings["ssh_dropin_path"], "host_key": HOST_KEY})]


@deploy("SSH hardening")
def ssh_hardening() -> None:
    """Harden sshd through a validated drop-in; never cut off the session doing the work."""
    settings = Settings()
    template_values = {
        "permit_root_login": settings["ssh_permit_root_login"],
        "max_auth_tries": settings["ssh_max_auth_tries"],
        "login_grace_time": settings["ssh_login_grace_time"],
        "allow_tcp_forwarding": settings["ssh_allow_tcp_forwarding"],
        "allow_agent_forwarding": "yes" if settings["ssh_allow_agent_forwarding"] else "no",
        "client_alive_interval": settings["ssh_client_alive_interval"],
        "client_alive_count_max": settings["ssh_client_alive_count_max"],
        "max_sessions": settings["ssh_max_sessions"],
        "max_startups": settings["ssh_max_startups"],
        "per_source_max_startups": settings["ssh_per_source_max_startups"],
        "log_level": settings["ssh_log_level"],
        "ciphers": list(settings["ssh_ciphers"]),
        "macs": list(settings["ssh_macs"]),
    }
    (current,) = prepared_facts(*fact_requests(settings))
    sshd_dropin(
        name="Install validated sshd hardening drop-in, reload ssh if it changed",
        path=settings["ssh_dropin_path"],
        settings=template_values,
        kex_algorithms=list(settings["ssh_kex_algorithms"]),
        current=current,
    )


COMPONENT = Component(
    name="ssh_hardening",
    defaults=DEFAULTS,
    deploy=ssh_hardening,
    should_run=should_run,
    fact_requests=fact_requests,
    choices=CHOICES,
    checks=(check, check_lockout, check_client),
)
