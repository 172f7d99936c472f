"""TCP_NODELAY on pyinfra's SSH sockets: set on purpose by each inventory file, never by importing a library.

Each case runs in a child process: a fresh paramiko, so what is patched is what that process did.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
INVENTORIES = REPO / "inventories"
# The inventory files; everything else in inventories/ is a library they import.
INVENTORY_FILES = ["aws_us_east_1.py", "baremetal_dc1.py", "lab.py", "terraform.py"]

# After the child's own statements: connect a TCP socket to a local listener and wrap it in a paramiko
# Transport, as pyinfra's SSH connector does, then print whether TCP_NODELAY ended up set on it.
PROBE = """
import json, socket
import paramiko
from spectra import pyinfra_compat

listener = socket.create_server(("127.0.0.1", 0))
client = socket.create_connection(listener.getsockname())
transport = paramiko.Transport(client)
nodelay = client.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
transport.close()
listener.close()
print(json.dumps({"patched": pyinfra_compat.ssh_tcp_nodelay_enabled(), "nodelay": nodelay}))
"""


def probe(statements: str, env: dict[str, str] | None = None) -> dict[str, bool]:
    result = subprocess.run(
        [sys.executable, "-c", statements + "\n" + PROBE],
        cwd=REPO,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    answer: dict[str, bool] = json.loads(result.stdout.strip().splitlines()[-1])
    return answer


def test_without_the_call_sockets_keep_nagle() -> None:
    assert probe("") == {"patched": False, "nodelay": False}


def test_importing_the_inventory_libraries_patches_nothing() -> None:
    statements = "import inventories.grouping, inventories.sources.lab, inventories.sources.terraform"
    assert probe(statements) == {"patched": False, "nodelay": False}


def test_loading_an_inventory_file_sets_tcp_nodelay() -> None:
    statements = f"import runpy; runpy.run_path({str(INVENTORIES / 'baremetal_dc1.py')!r})"
    assert probe(statements) == {"patched": True, "nodelay": True}


def test_loading_the_lab_inventory_sets_tcp_nodelay(tmp_path: Path) -> None:
    state = {
        "ssh_key": "/k",
        "nodes": [{"name": "node1", "address": "198.18.0.11", "roles": ["control_plane", "etcd"], "zone": "lab-a"}],
    }
    (tmp_path / "inventory.json").write_text(json.dumps(state))
    statements = f"import runpy; runpy.run_path({str(INVENTORIES / 'lab.py')!r})"
    assert probe(statements, {"SPECTRA_LAB_DIR": str(tmp_path)}) == {"patched": True, "nodelay": True}


def test_enable_twice_wraps_paramiko_once() -> None:
    statements = (
        "import paramiko\nfrom inventories import ssh_tuning\n"
        "assert ssh_tuning.enable() and ssh_tuning.enable()\n"
        "assert not hasattr(paramiko.Transport.__init__.__wrapped__, '__wrapped__')"
    )
    assert probe(statements) == {"patched": True, "nodelay": True}


def _module_level_calls(path: Path) -> list[str]:
    """The functions a file calls when it is loaded, in order (not those called inside its functions)."""
    calls = []
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            continue
        for call in ast.walk(node):
            if isinstance(call, ast.Call):
                calls.append(ast.unparse(call.func))
    return calls


def test_every_inventory_file_calls_it_before_building_groups() -> None:
    found = sorted(
        path.name for path in INVENTORIES.glob("*.py") if "build_groups" in _module_level_calls(path)
    )  # a file that builds groups is an inventory file
    assert found == INVENTORY_FILES
    for name in INVENTORY_FILES:
        calls = _module_level_calls(INVENTORIES / name)
        assert "ssh_tuning.enable" in calls, f"{name} does not call ssh_tuning.enable()"
        assert calls.index("ssh_tuning.enable") < calls.index("build_groups"), name
