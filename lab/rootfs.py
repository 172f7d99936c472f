"""Build and cache a bootable Debian root with debootstrap, then copy it per node."""

from __future__ import annotations

import fcntl
import shutil
import subprocess
import time
from pathlib import Path

from lab.config import LabConfig, LabError
from lab.shell import log, run

# Bump when the recipe below changes: the cache key includes it, so old roots are rebuilt.
RECIPE_VERSION = 2
PACKAGES = [
    "systemd",
    "systemd-sysv",
    "dbus",
    "openssh-server",
    "iproute2",
    "python3",
    "ca-certificates",
    "sudo",
    "procps",
    "curl",
    "kmod",
]

# Runs at every boot inside a node: the parts of a real machine that systemd-nspawn leaves out.
NODE_SETUP_SCRIPT = """#!/bin/sh
# Written by the Spectra lab, not by the deploys: it makes a container node behave like a VM.
set -u
# nspawn mounts cgroup v1 controllers read-only; containerd and kubelet need to write them.
mount -o remount,rw /sys/fs/cgroup 2>/dev/null || true
for dir in /sys/fs/cgroup/*; do
    [ -d "$dir" ] || continue
    mountpoint -q "$dir" || continue
    mount -o remount,rw "$dir" 2>/dev/null || mount -o remount,rw,bind "$dir" 2>/dev/null || true
done
# Container runtimes and kubelet expect shared mount propagation on /, as on a booted VM.
mount --make-rshared / 2>/dev/null || true
# kubelet's OOM watcher reads /dev/kmsg, which a container does not have.
[ -e /dev/kmsg ] || ln -sf /dev/console /dev/kmsg
exit 0
"""

NODE_SETUP_UNIT = """[Unit]
Description=Spectra lab: make this container node behave like a machine
DefaultDependencies=no
After=local-fs.target
Before=sysinit.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/local/sbin/spectra-lab-node-setup

[Install]
WantedBy=sysinit.target
"""


def cached_root(config: LabConfig, suite: str) -> Path:
    return config.cache_dir / "rootfs" / f"{suite}-r{RECIPE_VERSION}"


def ensure_root(config: LabConfig, suite: str) -> Path:
    """Return the cached root for `suite`, building it when missing.

    The cache is shared by every lab on the machine: a lock keeps two labs from building it at once."""
    target = cached_root(config, suite)
    if (target / ".spectra-complete").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.with_name(target.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / ".spectra-complete").exists():  # another lab built it while this one waited
            return target
        return _build_root(config, suite, target)


def _build_root(config: LabConfig, suite: str, target: Path) -> Path:
    building = target.with_name(target.name + ".building")
    if building.exists():
        shutil.rmtree(building)
    building.parent.mkdir(parents=True, exist_ok=True)
    log(f"building Debian {suite} root with debootstrap (about a minute; cached in {target})")
    started = time.monotonic()
    result = subprocess.run(
        [
            "debootstrap",
            "--variant=minbase",
            f"--include={','.join(PACKAGES)}",
            suite,
            str(building),
            config.debian_mirror,
        ],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip().splitlines()[-15:]
        debootstrap_log = building / "debootstrap" / "debootstrap.log"
        if debootstrap_log.exists():
            detail += ["--- debootstrap.log (last lines) ---"]
            detail += debootstrap_log.read_text(errors="replace").strip().splitlines()[-15:]
        raise LabError(
            f"debootstrap of {suite} from {config.debian_mirror} failed (exit {result.returncode}):\n"
            + "\n".join(detail)
        )
    _customise_root(building)
    (building / ".spectra-complete").write_text(f"{suite} recipe {RECIPE_VERSION}\n")
    if target.exists():
        shutil.rmtree(target)
    building.rename(target)
    log(f"built {suite} root in {time.monotonic() - started:.0f} s")
    return target


def _customise_root(root: Path) -> None:
    script = root / "usr/local/sbin/spectra-lab-node-setup"
    script.write_text(NODE_SETUP_SCRIPT)
    script.chmod(0o755)
    unit = root / "etc/systemd/system/spectra-lab-node-setup.service"
    unit.write_text(NODE_SETUP_UNIT)
    wants = root / "etc/systemd/system/sysinit.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    link = wants / "spectra-lab-node-setup.service"
    if not link.exists():
        link.symlink_to("/etc/systemd/system/spectra-lab-node-setup.service")
    # Host keys are made per node; the cached root must not carry any.
    for key in (root / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    (root / "etc/machine-id").write_text("")
    # Units that make no sense in a container node and only slow boot or fail.
    for unit_name in ("systemd-timesyncd.service", "apt-daily.timer", "apt-daily-upgrade.timer"):
        for path in (root / "etc/systemd/system").rglob(unit_name):
            if path.is_symlink():
                path.unlink()
    (root / "etc/apt/apt.conf.d/99spectra-lab").write_text('# Keep lab nodes small.\nAcquire::Languages "none";\n')


def copy_root(source: Path, dest: Path) -> None:
    if dest.exists():
        raise LabError(f"{dest} already exists")
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(dest.name + ".partial")
    if partial.exists():
        shutil.rmtree(partial)
    run(["cp", "-a", "--reflink=auto", str(source), str(partial)])
    (partial / ".spectra-complete").unlink(missing_ok=True)
    partial.rename(dest)
