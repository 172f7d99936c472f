"""Lab lifecycle: up, down, status, and power control of single nodes."""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from lab import artifacts, kubernetes_build, machines, mirror, network, registry, rootfs
from lab.config import LabConfig, LabError, NodeSpec
from lab.images import addons as addon_images
from lab.images import coredns as coredns_image
from lab.shell import log, run

REQUIRED_TOOLS = {
    "debootstrap": "debootstrap",
    "systemd-nspawn": "systemd-container",
    "ip": "iproute2",
    "iptables": "iptables",
    "ssh": "openssh-client",
    "ssh-keygen": "openssh-client",
    "cp": "coreutils",
    "docker-registry": "docker-registry",
    "skopeo": "skopeo",
}


def check_host() -> None:
    """Refuse early, with what to do, when this machine cannot run the lab."""
    if os.geteuid() != 0:
        raise LabError("the lab needs root (network namespaces, bridges and systemd-nspawn): run it with sudo")
    missing = sorted({pkg for tool, pkg in REQUIRED_TOOLS.items() if shutil.which(tool) is None})
    if missing:
        raise LabError(f"missing host tools; install them with: apt-get install -y {' '.join(missing)}")
    problems = []
    if not Path("/proc/self/ns/net").exists():
        problems.append("network namespaces (CONFIG_NET_NS)")
    filesystems = Path("/proc/filesystems").read_text()
    if "overlay" not in filesystems and not Path("/sys/module/overlay").exists():
        problems.append("the overlay filesystem (containerd snapshots)")
    if not Path("/sys/fs/cgroup").is_dir():
        problems.append("cgroups at /sys/fs/cgroup")
    if problems:
        raise LabError("this kernel lacks what the lab needs: " + "; ".join(problems))


class Lab:
    def __init__(self, config: LabConfig):
        self.config = config
        self.state_path = config.state_dir / "state.json"
        self.inventory_path = config.state_dir / "inventory.json"

    # --- state ---------------------------------------------------------------------------------

    def load_state(self) -> dict[str, Any] | None:
        if not self.state_path.exists():
            return None
        try:
            state: dict[str, Any] = json.loads(self.state_path.read_text())
        except json.JSONDecodeError as exc:
            raise LabError(f"lab state {self.state_path} is corrupt ({exc}); run `down --force`") from exc
        return state

    def save_state(self, state: dict[str, Any]) -> None:
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2) + "\n")
        tmp.rename(self.state_path)
        self._write_inventory(state)

    def _write_inventory(self, state: dict[str, Any]) -> None:
        inventory = {
            "ssh_key": str(machines.ssh_key(self.config)),
            "known_hosts": str(machines.known_hosts(self.config)),
            "ssh_config": str(machines.ssh_config(self.config)),
            "mirror_url": self.config.mirror_url,
            "registry": registry.registry_address(self.config),
            "nodes": [{k: node[k] for k in ("name", "address", "roles", "zone", "suite")} for node in state["nodes"]],
        }
        tmp = self.inventory_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(inventory, indent=2) + "\n")
        tmp.rename(self.inventory_path)

    @contextmanager
    def locked(self) -> Iterator[None]:
        self.config.state_dir.mkdir(parents=True, exist_ok=True)
        with open(self.config.state_dir / "lock", "w") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise LabError("another lab command is running") from None
            yield

    def _node(self, state: dict[str, Any], name: str) -> dict[str, Any]:
        for node in state["nodes"]:
            if node["name"] == name:
                return node
        raise LabError(f"no node named {name!r}; nodes: {', '.join(n['name'] for n in state['nodes'])}")

    # --- up ------------------------------------------------------------------------------------

    def up(self, nodes: list[NodeSpec]) -> dict[str, Any]:
        check_host()
        self.config.validate()
        with self.locked():
            started = time.monotonic()
            state = self.load_state()
            if state is None:
                network.check_bridge_free(self.config, lab_owns_bridge=False)
                state = {
                    "bridge": self.config.bridge,
                    "subnet": self.config.subnet,
                    "ip_forward_was": None,
                    "mirror_pid": None,
                    "nodes": [],
                }
            elif state["subnet"] != self.config.subnet or state["bridge"] != self.config.bridge:
                raise LabError(f"the lab is up on {state['bridge']} {state['subnet']}; run `down` before changing them")
            existing = {n["name"]: n for n in state["nodes"]}
            for spec in nodes:
                if spec.name in existing:
                    old = existing[spec.name]
                    if (old["roles"], old["zone"], old["suite"]) != (spec.roles, spec.zone, spec.suite):
                        raise LabError(
                            f"node {spec.name} exists with roles {old['roles']}, zone {old['zone']}, "
                            f"suite {old['suite']}; run `down` to change it"
                        )

            machines.ensure_lab_key(self.config)
            for suite in sorted({spec.suite for spec in nodes}):
                rootfs.ensure_root(self.config, suite)

            changed = network.bridge_up(self.config)
            if "ip_forward_was" in changed:
                state["ip_forward_was"] = changed["ip_forward_was"]
            self.save_state(state)

            if not mirror.is_mirror_process(self.config, state.get("mirror_pid")):
                state["mirror_pid"] = mirror.start(self.config)
                self.save_state(state)
            artifacts.publish_all(self.config)
            try:  # Kubernetes from its Go modules: about 20 minutes the first time, then from the cache
                kubernetes_build.publish_to_lab(
                    self.config.state_dir, log=lambda message: log(f"kubernetes: {message}")
                )
            except kubernetes_build.BuildError as error:
                raise LabError(f"Kubernetes binaries for the lab mirror: {error}") from None
            if not registry.is_registry_process(self.config, state.get("registry_pid")):
                state["registry_pid"] = registry.start(self.config)
                self.save_state(state)
            registry.publish_images(self.config, registry.pinned_sandbox_image())
            coredns_image.publish(self.config)
            addon_images.publish_enabled(self.config)  # only the addons the lab turns on

            used_indexes = {n["index"] for n in state["nodes"]}
            for spec in nodes:
                if spec.name in existing:
                    continue
                index = min(set(range(len(used_indexes) + 1)) - used_indexes)
                used_indexes.add(index)
                record = {
                    "name": spec.name,
                    "roles": spec.roles,
                    "zone": spec.zone,
                    "suite": spec.suite,
                    "index": index,
                    "address": self.config.address_of(index),
                    "pid": None,
                    "host_key": None,
                }
                self._prepare_node(record)
                state["nodes"].append(record)
                self.save_state(state)
            self._write_known_hosts(state)

            to_wait = []
            for record in state["nodes"]:
                network.node_network_up(self.config, record["name"], record["index"], record["address"])
                if not machines.pid_alive(self.config, record["pid"], record["name"]):
                    record["pid"] = machines.boot(self.config, record["name"])
                    self.save_state(state)
                    to_wait.append(record)
            for record in to_wait:
                machines.wait_ready(self.config, record["name"], record["address"], record["pid"])
            log(f"lab up: {len(state['nodes'])} node(s) in {time.monotonic() - started:.1f} s")
            return state

    def _prepare_node(self, record: dict[str, Any]) -> None:
        directory = machines.node_dir(self.config, record["name"])
        root = directory / "rootfs"
        if root.exists():
            shutil.rmtree(directory)
        directory.mkdir(parents=True, exist_ok=True)
        rootfs.copy_root(rootfs.cached_root(self.config, record["suite"]), root)
        record["machine_id"], record["host_key"] = machines.personalise_root(
            self.config, root, record["name"], record["address"]
        )

    def _write_known_hosts(self, state: dict[str, Any]) -> None:
        machines.write_known_hosts(self.config, [(n["name"], n["address"], n["host_key"]) for n in state["nodes"]])

    # --- down ----------------------------------------------------------------------------------

    def down(self) -> None:
        if os.geteuid() != 0:
            raise LabError("the lab needs root: run it with sudo")
        with self.locked():
            state = self.load_state()
            if state is None:
                log("the lab is not up; nothing to remove")
                return
            # Take down what was brought up, whatever this command's defaults say.
            self.config.bridge, self.config.subnet = state["bridge"], state["subnet"]
            for record in state["nodes"]:
                self._stop_node(record, hard=True)
                network.node_network_down(self.config, record["name"], record["index"])
            pid = state.get("mirror_pid")
            if pid and mirror.is_mirror_process(self.config, pid):
                os.kill(int(pid), signal.SIGTERM)
            pid = state.get("registry_pid")
            if pid and registry.is_registry_process(self.config, pid):
                os.kill(int(pid), signal.SIGTERM)
            network.bridge_down(self.config, state.get("ip_forward_was"))
            # Keep the SSH key and caches; remove node roots and run state.
            shutil.rmtree(self.config.state_dir / "nodes", ignore_errors=True)
            for name in ("state.json", "inventory.json", "mirror.pid", "ssh/known_hosts", "ssh/config"):
                (self.config.state_dir / name).unlink(missing_ok=True)
            log("lab down: nodes, namespaces, links, bridge, NAT rules and mirror removed")

    def _stop_node(self, record: dict[str, Any], hard: bool) -> None:
        # A shared SSH connection to a machine that is going away would only hang later commands.
        machines.close_ssh_master(self.config, record["name"])
        machine_id = record.get("machine_id")
        machines.power_off(self.config, record["name"], record.get("pid"), machine_id, hard=hard)
        # Any stray machine of the same node (a crashed earlier run) goes too.
        for pid in machines.machine_processes(self.config, record["name"]):
            machines.power_off(self.config, record["name"], pid, machine_id, hard=True)
        record["pid"] = None

    # --- single nodes --------------------------------------------------------------------------

    def stop(self, name: str, hard: bool = False) -> None:
        with self.locked():
            state = self._require_state()
            record = self._node(state, name)
            self._stop_node(record, hard=hard)
            self.save_state(state)
            log(f"{name} powered off" + (" (power cut)" if hard else ""))

    def start(self, name: str) -> None:
        check_host()
        with self.locked():
            state = self._require_state()
            record = self._node(state, name)
            if machines.pid_alive(self.config, record["pid"], name):
                log(f"{name} is already running")
                return
            network.node_network_up(self.config, name, record["index"], record["address"])
            record["pid"] = machines.boot(self.config, name)
            self.save_state(state)
            machines.wait_ready(self.config, name, record["address"], record["pid"])
            log(f"{name} booted")

    def restart(self, name: str, hard: bool = False) -> None:
        self.stop(name, hard=hard)
        self.start(name)

    def _require_state(self) -> dict[str, Any]:
        state = self.load_state()
        if state is None:
            raise LabError("the lab is not up: run `python -m lab up`")
        self.config.bridge, self.config.subnet = state["bridge"], state["subnet"]
        return state

    # --- status and ssh ------------------------------------------------------------------------

    def status(self) -> list[dict[str, Any]]:
        state = self._require_state()
        rows = []
        for record in state["nodes"]:
            running = machines.pid_alive(self.config, record["pid"], record["name"])
            system = "stopped"
            if running:
                result = subprocess.run(
                    machines.ssh_command(self.config, record["address"], "systemctl", "is-system-running"),
                    capture_output=True,
                    text=True,
                )
                system = result.stdout.strip() or "unreachable"
            rows.append({**record, "state": system})
        return rows

    def ssh(self, name: str, command: list[str]) -> int:
        state = self._require_state()
        record = self._node(state, name)
        return subprocess.call(machines.ssh_command(self.config, record["address"], *command))

    def leftovers(self, machine_ids: list[str] | None = None) -> list[str]:
        """What of the lab still exists on the host (used by tests and `down` checks).

        `machine_ids`: nodes known to have existed; any process of theirs still alive is a leftover."""
        found = []
        for machine_id in machine_ids or []:
            found += [f"node init {pid} (machine {machine_id})" for pid in machines.container_inits(machine_id)]
        netns = run(["ip", "netns", "list"]).stdout
        netns_prefix = network.netns_name(self.config, "")
        found += [f"netns {line.split()[0]}" for line in netns.splitlines() if line.startswith(netns_prefix)]
        links = run(["ip", "-o", "link", "show"]).stdout
        for line in links.splitlines():
            ifname = line.split(":")[1].strip().split("@")[0]
            if ifname == self.config.bridge or re.fullmatch(re.escape(self.config.bridge) + r"v\d+", ifname):
                found.append(f"link {ifname}")
        nat = run(["iptables", "-t", "nat", "-S"]).stdout + run(["iptables", "-S"]).stdout
        comment = network.nat_comment(self.config)
        found += [f"iptables {line}" for line in nat.splitlines() if f"{comment} " in line or f'"{comment}"' in line]
        mounts = Path("/proc/self/mountinfo").read_text()
        found += [f"mount {line.split()[4]}" for line in mounts.splitlines() if f"{self.config.state_dir}/" in line]
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except (FileNotFoundError, ProcessLookupError):
                continue
            # The trailing slash keeps /var/lib/spectra-lab from matching a second lab's /var/lib/spectra-lab-x.
            if any(name in cmdline for name in (b"systemd-nspawn", b"lab.mirror_server", b"docker-registry")) and (
                f"{self.config.state_dir}/".encode() in cmdline
            ):
                readable = cmdline.replace(b"\0", b" ").decode(errors="replace")
                found.append(f"process {entry.name} {readable}")
        return found
