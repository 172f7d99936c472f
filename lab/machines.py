"""Per-node machines: prepare a root, boot it with systemd-nspawn, wait for SSH, power it off."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

from lab.config import LabConfig, LabError
from lab.network import netns_name
from lab.processes import cmdline
from lab.shell import run

# The node must be able to remount cgroups, mount overlay snapshots and run containers.
SYSCALL_FILTER = "@system-service @mount @privileged keyctl bpf"


def node_dir(config: LabConfig, name: str) -> Path:
    return config.state_dir / "nodes" / name


def ssh_dir(config: LabConfig) -> Path:
    return config.state_dir / "ssh"


def ssh_key(config: LabConfig) -> Path:
    return ssh_dir(config) / "id_ed25519"


def known_hosts(config: LabConfig) -> Path:
    return ssh_dir(config) / "known_hosts"


def ensure_lab_key(config: LabConfig) -> Path:
    key = ssh_key(config)
    if not key.exists():
        key.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(key.parent, 0o700)
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "spectra-lab", "-f", str(key)])
    return key


def personalise_root(config: LabConfig, root: Path, name: str, address: str) -> tuple[str, str]:
    """Give a copied root its own identity. Returns its machine ID and ed25519 host public key."""
    (root / "etc/hostname").write_text(f"{name}\n")
    (root / "etc/hosts").write_text(
        f"127.0.0.1\tlocalhost\n127.0.1.1\t{name}\n{address}\t{name}\n::1\tlocalhost ip6-localhost\n"
    )
    machine_id = uuid.uuid4().hex
    (root / "etc/machine-id").write_text(machine_id + "\n")
    resolv = root / "etc/resolv.conf"
    if resolv.is_symlink():
        resolv.unlink()
    resolv.write_text(Path("/etc/resolv.conf").read_text())
    # `ssh-keygen -A -f PREFIX` writes every default host key type under PREFIX/etc/ssh.
    run(["ssh-keygen", "-A", "-f", str(root)])
    dot_ssh = root / "root/.ssh"
    dot_ssh.mkdir(mode=0o700, parents=True, exist_ok=True)
    authorized = dot_ssh / "authorized_keys"
    authorized.write_text(Path(str(ssh_key(config)) + ".pub").read_text())
    authorized.chmod(0o600)
    return machine_id, (root / "etc/ssh/ssh_host_ed25519_key.pub").read_text().split()[:2][1]


def ssh_config(config: LabConfig) -> Path:
    return ssh_dir(config) / "config"


def write_known_hosts(config: LabConfig, entries: list[tuple[str, str, str]]) -> None:
    """entries: (name, address, ed25519 public key). Also writes an ssh_config naming every node,
    so `ssh -F $SPECTRA_LAB_DIR/ssh/config node1` and testinfra's `--ssh-config` reach the nodes."""
    lines = [f"{address},{name} ssh-ed25519 {key}\n" for name, address, key in entries]
    known_hosts(config).write_text("".join(lines))
    blocks = [
        f"Host {name}\n"
        f"    HostName {address}\n"
        "    User root\n"
        f"    IdentityFile {ssh_key(config)}\n"
        "    IdentitiesOnly yes\n"
        f"    UserKnownHostsFile {known_hosts(config)}\n"
        "    StrictHostKeyChecking yes\n"
        "    BatchMode yes\n"
        "    LogLevel ERROR\n"
        # One SSH connection per node, reused by every command (testinfra runs many).
        "    ControlMaster auto\n"
        f"    ControlPath {ssh_dir(config)}/cm-%C\n"
        "    ControlPersist 60\n"
        for name, address, _ in entries
    ]
    ssh_config(config).write_text("\n".join(blocks))


def close_ssh_master(config: LabConfig, name: str) -> None:
    """End the shared SSH connection to a node (ControlMaster in the lab's ssh_config), if any."""
    if ssh_config(config).exists():
        subprocess.run(["ssh", "-F", str(ssh_config(config)), "-O", "exit", name], capture_output=True, timeout=10)


def pid_alive(config: LabConfig, pid: int | None, name: str) -> bool:
    """Whether `pid` is the systemd-nspawn of this lab's node `name` (its root directory says so)."""
    argv = cmdline(pid)
    root = f"--directory={node_dir(config, name) / 'rootfs'}".encode()
    return bool(argv) and b"systemd-nspawn" in os.path.basename(argv[0]) and root in argv


def boot(config: LabConfig, name: str) -> int:
    """Start the node's systemd as PID 1, detached from any terminal. Returns nspawn's PID."""
    directory = node_dir(config, name)
    log_file = directory / "console.log"
    env = dict(os.environ, SYSTEMD_NSPAWN_API_VFS_WRITABLE="yes")
    with open(log_file, "ab") as out, open(os.devnull, "rb") as devnull:
        process = subprocess.Popen(
            [
                "systemd-nspawn",
                "--quiet",
                "--boot",
                "--register=no",
                "--keep-unit",
                f"--machine={name}",
                f"--directory={directory / 'rootfs'}",
                f"--network-namespace-path=/run/netns/{netns_name(config, name)}",
                "--console=passive",
                "--capability=all",
                f"--system-call-filter={SYSCALL_FILTER}",
                "--resolv-conf=off",
                "--timezone=off",
                "--link-journal=no",
            ],
            stdin=devnull,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    (directory / "nspawn.pid").write_text(f"{process.pid}\n")
    return process.pid


def ssh_command(config: LabConfig, address: str, *command: str, timeout: int = 5) -> list[str]:
    return [
        "ssh",
        "-i", str(ssh_key(config)),
        "-o", f"UserKnownHostsFile={known_hosts(config)}",
        "-o", "StrictHostKeyChecking=yes",
        "-o", "BatchMode=yes",
        "-o", f"ConnectTimeout={timeout}",
        "-o", "LogLevel=ERROR",
        f"root@{address}",
        *command,
    ]  # fmt: skip


def wait_ready(config: LabConfig, name: str, address: str, pid: int, timeout: float = 120) -> str:
    """Wait until systemd in the node finished booting and SSH answers. Returns the system state."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if not pid_alive(config, pid, name):
            tail = (node_dir(config, name) / "console.log").read_text(errors="replace")[-2000:]
            raise LabError(f"node {name} stopped while booting; console log ends:\n{tail}")
        result = subprocess.run(
            ssh_command(config, address, "systemctl", "is-system-running", "--wait", timeout=3),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        state = result.stdout.strip()
        if state in ("running", "degraded"):
            return state
        last = (result.stderr or result.stdout).strip()
        time.sleep(0.5)
    raise LabError(f"node {name} ({address}) did not finish booting within {timeout:.0f} s: {last}")


def container_inits(machine_id: str | None = None) -> list[int]:
    """PIDs of systemd-nspawn containers' init processes, all of them or the one booted with `machine_id`.

    nspawn passes the machine ID to the node's init as `container_uuid`; it is how a node whose
    systemd-nspawn died is still found."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        if b"container=systemd-nspawn" not in environ:
            continue
        uuids = [item.split(b"=", 1)[1] for item in environ if item.startswith(b"container_uuid=")]
        if machine_id is None or any(u.replace(b"-", b"").decode() == machine_id for u in uuids):
            found.append(int(entry.name))
    return found


def kill_container(machine_id: str) -> None:
    """A power cut: SIGKILL the node's init, and the kernel kills every process of its PID namespace."""
    for init in container_inits(machine_id):
        with contextlib.suppress(ProcessLookupError):
            os.kill(init, signal.SIGKILL)


def power_off(
    config: LabConfig, name: str, pid: int | None, machine_id: str | None, hard: bool = False, timeout: float = 30
) -> None:
    """Stop a node's whole machine: an orderly shutdown, or a power cut with `hard`.

    Killing systemd-nspawn alone is not a power cut: the node's init would live on, orphaned."""
    if pid_alive(config, pid, name):
        assert pid is not None
        if hard and machine_id:
            kill_container(machine_id)
        else:
            # SIGTERM makes systemd-nspawn ask the node's systemd for a clean poweroff.
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and pid_alive(config, pid, name):
            time.sleep(0.2)
        if pid_alive(config, pid, name):
            if machine_id:
                kill_container(machine_id)
            os.kill(pid, signal.SIGKILL)
            time.sleep(0.5)
    if machine_id:
        kill_container(machine_id)  # an init whose nspawn is already gone
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and container_inits(machine_id):
            time.sleep(0.1)
    if pid_alive(config, pid, name) or (machine_id and container_inits(machine_id)):
        raise LabError(f"node {name} (pid {pid}) did not stop")


def machine_processes(config: LabConfig, name: str) -> list[int]:
    """PIDs of any systemd-nspawn process for this machine, tracked or not."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and pid_alive(config, int(entry.name), name):
            found.append(int(entry.name))
    return found
