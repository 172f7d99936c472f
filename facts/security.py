"""Facts for the hardening components: sshd's version/effective settings, and what audit can do here."""

from __future__ import annotations

import re
from typing import Any

from pyinfra.api import FactBase, QuoteString, StringCommand

from facts.config_state import split_file_lines
from facts.files import FileStates

# sshd -T keys the SSH hardening compares (lower case, as sshd -T prints them)
SSHD_EFFECTIVE_KEYS = (
    "permitrootlogin",
    "passwordauthentication",
    "kbdinteractiveauthentication",
    "pubkeyauthentication",
    "permitemptypasswords",
    "x11forwarding",
    "allowtcpforwarding",
    "maxauthtries",
    "logingracetime",
    "kexalgorithms",
    "ciphers",
    "macs",
    "hostkey",
    "compression",
    "persourcemaxstartups",
)
# sshd -T prints one line per value for these: the values are joined with "," (in sshd -T's order, once each)
SSHD_REPEATED_KEYS = ("hostkey",)

_SSHD_TAIL = (
    "printf 'V\\t%s\\n' \"$(dpkg-query -W -f='${Version}' openssh-server 2>/dev/null)\"; "
    "if command -v sshd >/dev/null 2>&1 || [ -x /usr/sbin/sshd ]; then "
    'PATH="$PATH:/usr/sbin" sshd -T 2>/dev/null | grep -iE \'^(' + "|".join(SSHD_EFFECTIVE_KEYS) + ") ' "
    "| sed 's/^/E\\t/'; fi; true"
)


def openssh_version(package_version: str | None) -> tuple[int, int] | None:
    """``1:9.2p1-2+deb12u3`` -> ``(9, 2)``; None when not installed or unparsable."""
    if not package_version:
        return None
    match = re.match(r"^(?:\d+:)?(\d+)\.(\d+)", package_version)
    if not match:
        return None
    return int(match.group(1)), int(match.group(2))


class SshdState(FactBase[dict[str, Any]]):
    """
    The managed drop-in's file state, the installed OpenSSH server version and the effective values
    of the settings the hardening manages (``sshd -T``, i.e. after every Include and override):

    .. code:: python

        {"dropin": {"type": "file", "mode": "600", "user": "root", "group": "root", "sha256": "..."},
         "package_version": "1:9.2p1-2+deb12u3", "version": (9, 2), "host_key": True,
         "effective": {"permitrootlogin": "without-password", "hostkey": "/etc/ssh/ssh_host_ed25519_key", ...}}

    ``host_key`` says whether the private key given as ``host_key`` exists (None when none was asked about).
    """

    @staticmethod
    def default() -> dict[str, Any]:
        return {"dropin": None, "package_version": None, "version": None, "host_key": None, "effective": {}}

    def command(self, dropin: str, host_key: str | None = None) -> StringCommand:
        tail: list[str | StringCommand] = [_SSHD_TAIL]
        if host_key is not None:
            # K<TAB>yes when the private host key the drop-in names exists and is not empty
            tail = [
                StringCommand(
                    "if [ -s", QuoteString(host_key), "]; then printf 'K\\tyes\\n'; else printf 'K\\tno\\n'; fi;"
                ),
                _SSHD_TAIL,
            ]
        return StringCommand(FileStates().command([dropin]), ";", *tail)

    def process(self, output: list[str]) -> dict[str, Any]:
        file_lines, output = split_file_lines(output)
        files = FileStates().process(file_lines)
        result = self.default()
        result["dropin"] = next(iter(files.values()), None)
        for line in output:
            tag, _, rest = line.partition("\t")
            if tag == "V":
                result["package_version"] = rest.strip() or None
                result["version"] = openssh_version(result["package_version"])
            elif tag == "K":
                result["host_key"] = rest.strip() == "yes"
            elif tag == "E":
                key, _, value = rest.strip().partition(" ")
                key, value = key.lower(), value.strip()
                effective = result["effective"]
                if key in SSHD_REPEATED_KEYS and key in effective:
                    if value not in effective[key].split(","):
                        effective[key] = f"{effective[key]},{value}"
                else:
                    effective[key] = value
        return result


# CAP_AUDIT_CONTROL is capability bit 30 (linux/capability.h)
CAP_AUDIT_CONTROL = 30

_AUDIT_COMMAND = (
    "printf 'VIRT\\t%s\\n' \"$(systemd-detect-virt --container 2>/dev/null || echo none)\"; "
    "printf 'CAPEFF\\t%s\\n' \"$(awk '/^CapEff:/ {print $2}' /proc/self/status)\"; "
    "if grep -qwE 'audit=(0|off)' /proc/cmdline 2>/dev/null; then echo 'CMDLINE\tdisabled'; "
    "else echo 'CMDLINE\tdefault'; fi; "
    "if [ -x /sbin/auditctl ] || command -v auditctl >/dev/null 2>&1; then "
    's=$(PATH="$PATH:/sbin:/usr/sbin" auditctl -s 2>&1); '
    "printf 'AUDITCTL\\t%s\\t%s\\n' \"$?\" \"$(printf '%s' \"$s\" | tr '\\n' ' ')\"; "
    "else echo 'AUDITCTL\tmissing'; fi; true"
)


class AuditSupport(FactBase[dict[str, Any]]):
    """
    Whether this host can load kernel audit rules, and why not:

    .. code:: python

        {"container": "systemd-nspawn" or None, "cap_audit_control": True,
         "kernel_disabled": False, "auditctl": "ok" | "missing" | "failed",
         "auditctl_output": "enabled 1 failure 1 ...",
         "can_load": False, "reason": "inside a systemd-nspawn container: ..."}

    Audit is not namespaced: in a container the rules (if they load at all) would be the one shared
    kernel's, affecting the host and every other container. So a container never counts as able.
    """

    @staticmethod
    def default() -> dict[str, Any]:
        return {
            "container": None,
            "cap_audit_control": False,
            "kernel_disabled": False,
            "auditctl": "missing",
            "auditctl_output": "",
            "can_load": False,
            "reason": "audit support unknown",
        }

    def command(self) -> str:
        return _AUDIT_COMMAND

    def process(self, output: list[str]) -> dict[str, Any]:
        result = self.default()
        for line in output:
            fields = line.rstrip("\n").split("\t")
            tag = fields[0]
            if tag == "VIRT" and len(fields) > 1:
                virt = fields[1].strip()
                result["container"] = None if virt in ("", "none") else virt
            elif tag == "CAPEFF" and len(fields) > 1 and fields[1].strip():
                try:
                    result["cap_audit_control"] = bool(int(fields[1].strip(), 16) >> CAP_AUDIT_CONTROL & 1)
                except ValueError:
                    result["cap_audit_control"] = False
            elif tag == "CMDLINE" and len(fields) > 1:
                result["kernel_disabled"] = fields[1].strip() == "disabled"
            elif tag == "AUDITCTL":
                if len(fields) > 1 and fields[1] == "missing":
                    result["auditctl"] = "missing"
                else:
                    status = fields[1] if len(fields) > 1 else "1"
                    result["auditctl"] = "ok" if status == "0" else "failed"
                    result["auditctl_output"] = fields[2].strip() if len(fields) > 2 else ""

        reason = None
        if result["container"]:
            reason = (
                f"inside a {result['container']} container: the kernel audit subsystem is not namespaced, "
                "rules would be the shared host kernel's"
            )
        elif result["kernel_disabled"]:
            reason = "audit disabled on the kernel command line (audit=0)"
        elif not result["cap_audit_control"]:
            reason = "no CAP_AUDIT_CONTROL"
        elif result["auditctl"] == "failed":
            reason = f"auditctl -s failed: {result['auditctl_output']}"
        result["can_load"] = reason is None
        result["reason"] = reason or "audit rules can be loaded"
        return result
