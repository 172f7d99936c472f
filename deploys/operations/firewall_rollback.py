"""A firewall change that cannot cut the connection it was applied over: the live table saved and a rollback
armed on the host before nftables loads the new one, disarmed only after the controller logs in anew.

The SSH session doing the work is established, and conntrack lets it through any new ruleset, so it proves
nothing: :func:`new_connection` opens a NEW connection with the host's own connection data. When none gets
in within the bound, the deploy fails and the transient timer (``spectra-firewall-rollback``) puts the previous
table back, in force and in the rules file. Used by ``deploys.components.firewall``.
"""

from __future__ import annotations

from typing import Any

from pyinfra.api import DeployError, FunctionCommand, QuoteString, StringCommand, operation

from deploys.operations.config_files import ConfigFile, config_files, shell_script

ROLLBACK_UNIT = "spectra-firewall-rollback"
ROLLBACK_DIR = "/run/spectra-firewall"


@operation()
def guarded_config_files(
    files: list[ConfigFile],
    current: dict[str, Any] | None,
    table: str,
    rollback_seconds: int,
    reconnect_seconds: int,
    units: list[str],
):
    """
    ``config_files`` for the firewall's files, guarded: before ``units`` (nftables.service) start or the table
    is reloaded, the live table is saved and its restore armed on the host; after, a NEW SSH connection must
    get in within ``reconnect_seconds`` before the rollback is disarmed. Nothing to change: no command at all.
    """
    rules_path = files[0].path
    armed = arm_rollback(table, rules_path, rollback_seconds)
    commands = list(
        config_files._inner(
            files=files,
            daemon_reload=True,
            enabled_units=units,
            running_units=units,
            current=current,
            prepare=armed,
            # Replaces our table only, in one transaction (the file deletes and redefines it)
            on_change=[StringCommand("nft", "-f", QuoteString(rules_path))],
        )
    )
    yield from commands
    if any(command is armed[0] for command in commands):  # a ruleset was (re)loaded
        yield FunctionCommand(new_connection, (), {"seconds": reconnect_seconds})
        yield from disarm_rollback()


ROLLBACK_FILE = f"{ROLLBACK_DIR}/rollback.nft"
# The rollback unit's script: the saved table back in force, and in the rules file, so the next run sees a
# difference and tries again (rather than finding its file in place and the old table loaded). Constant text.
_RESTORE = 'nft -f "$1" && cp "$1" "$2"'
# The live table as a file `nft -f` replaces ours with (create-if-missing, delete, define; only the delete when
# there was none): stateless (-s), so no counters or dynamic set elements are saved.
_SAVE = 'mkdir -p "$(dirname "$3")" && { printf "table inet %s\\ndelete table inet %s\\n" "$1" "$1"; nft -s list table inet "$1" 2>/dev/null || true; } > "$3".new && mv -f "$3".new "$3"'  # noqa: E501


def arm_rollback(table: str, rules_path: str, seconds: int) -> list[StringCommand]:
    """Save the live table, then arm a transient systemd timer that restores it after ``seconds`` (an armed
    one from an earlier run is replaced)."""
    return [
        shell_script(_SAVE, table, rules_path, ROLLBACK_FILE, name="spectra-firewall-save"),
        StringCommand(
            "systemctl", "stop", f"{ROLLBACK_UNIT}.timer", f"{ROLLBACK_UNIT}.service", "2>/dev/null", "||", "true"
        ),
        StringCommand("systemctl", "reset-failed", f"{ROLLBACK_UNIT}.service", "2>/dev/null", "||", "true"),
        StringCommand(
            "systemd-run",
            "--quiet",
            f"--unit={ROLLBACK_UNIT}",
            f"--on-active={seconds}s",
            "--timer-property=AccuracySec=1s",
            "sh",
            "-c",
            QuoteString(_RESTORE),
            "spectra-firewall-rollback",
            QuoteString(ROLLBACK_FILE),
            QuoteString(rules_path),
        ),
    ]


def disarm_rollback() -> list[StringCommand]:
    return [
        StringCommand("systemctl", "stop", f"{ROLLBACK_UNIT}.timer", "2>/dev/null", "||", "true"),
        StringCommand("rm", "-f", QuoteString(ROLLBACK_FILE)),
    ]


def new_connection(state: Any, host: Any, seconds: int) -> None:
    """Open NEW SSH connections to ``host`` (its own connection data: address, port, user, key, ssh config and
    its ProxyJump) until one runs ``true``, for up to ``seconds``; raise when none did. The connection the run
    uses is established and passes any ruleset: only a new one shows whether the next run can log in."""
    import time

    from pyinfra.connectors.sshuserclient import SSHClient

    connector = host.connector
    deadline = time.monotonic() + seconds
    problem = "no attempt"
    while True:
        kwargs = connector.make_paramiko_kwargs()
        hostname = kwargs.pop("hostname")
        kwargs["timeout"] = max(1.0, min(5.0, deadline - time.monotonic()))
        kwargs["banner_timeout"] = kwargs["auth_timeout"] = kwargs["timeout"]
        client = SSHClient()
        try:
            client.connect(hostname, **kwargs)
            _, stdout, _ = client.exec_command("true", timeout=kwargs["timeout"])
            if stdout.channel.recv_exit_status() == 0:
                return
            problem = "`true` failed on the new connection"
        except Exception as error:  # noqa: BLE001 (socket, SSH and auth errors alike: any means not let in)
            problem = f"{type(error).__name__}: {error}"
        finally:
            client.close()
        if time.monotonic() >= deadline:
            raise DeployError(
                f"{host.name}: the new firewall refuses new SSH connections from this controller ({problem}, "
                f"for {seconds} s); its rollback timer ({ROLLBACK_UNIT}.timer) restores the previous table"
            )
        time.sleep(1)
