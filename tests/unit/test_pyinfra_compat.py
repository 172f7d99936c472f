"""spectra.pyinfra_compat against the installed pyinfra: the version check and every function in it.

The pieces that import ``pyinfra_cli`` run in a child process: its import gevent-patches the process.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from pyinfra.api import Config, Inventory, State
from pyinfra.operations import server

from spectra import pyinfra_compat
from tests.unit.pyinfra_harness import run_deploy

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def fresh_check() -> Iterator[None]:
    pyinfra_compat.check_version.cache_clear()
    yield
    pyinfra_compat.check_version.cache_clear()


# --- the version check ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "version, verified",
    [("3.10.0", True), ("3.10.7", True), ("3.10", True), ("3.11.0", False), ("3.9.4", False), ("4.0.0", False),
     ("3.100.0", False), ("unknown", False)],
)  # fmt: skip
def test_verified_versions_are_the_3_10_series(version: str, verified: bool) -> None:
    assert pyinfra_compat.is_verified(version) is verified


def test_the_installed_pyinfra_is_verified(fresh_check: None) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert pyinfra_compat.check_version() is True


def test_an_unverified_pyinfra_warns_once(fresh_check: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pyinfra_compat, "pyinfra_version", lambda: "3.12.1")
    with pytest.warns(pyinfra_compat.PyinfraCompatWarning, match="pyinfra 3.12.1 is not a version spectra was"):
        assert pyinfra_compat.check_version() is False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert pyinfra_compat.check_version() is False  # checked once per process


def test_importing_it_patches_nothing_and_loads_no_cli() -> None:
    code = (
        "import importlib, sys\n"
        "op, util = (importlib.import_module(f'pyinfra.api.{name}') for name in ('operation', 'util'))\n"
        "from spectra import pyinfra_compat\n"
        "print(sorted(name for name in sys.modules if name.startswith('pyinfra_cli')),\n"
        "      op.get_operation_order_from_stack is util.get_operation_order_from_stack,\n"
        "      pyinfra_compat.ssh_tcp_nodelay_enabled())\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.stdout.split() == ["[]", "True", "False"], result.stderr


# --- the CLI's own pieces (child process) --------------------------------------------------------------


CLI_PIECES = """
import json, sys, types
from spectra import pyinfra_compat

pyinfra_compat.patch_stdlib_for_gevent()
inventory = pyinfra_compat.make_inventory("inv.py", cwd=".", override_data={"extra": 1})
host = inventory.get_host("web1")
try:
    pyinfra_compat.run_cli(["--version"])
    cli_exit = None
except SystemExit as exc:
    cli_exit = exc.code
print(json.dumps({
    "groups": sorted(inventory.groups),
    "data": [host.data.get("port"), host.data.get("extra")],
    "group_data": pyinfra_compat.read_group_data("group_data/web.py", inventory),
    "cli_value": pyinfra_compat.parse_cli_value("true"),
    "op_name": pyinfra_compat.pretty_op_name(types.SimpleNamespace(names={"Install x"}, args=["a", 1])),
    "connectors": "ssh" in pyinfra_compat.get_all_connectors(),
    "global_arguments": "_sudo" in dict(pyinfra_compat.all_global_arguments()),
    "cli_exit": cli_exit,
}))
"""


def test_the_cli_pieces_in_a_child_process(tmp_path: Path) -> None:
    (tmp_path / "inv.py").write_text('web = ["web1"]\n')
    (tmp_path / "group_data").mkdir()
    (tmp_path / "group_data" / "web.py").write_text("import os\nport = 8080\n")
    (tmp_path / "piece.py").write_text(textwrap.dedent(CLI_PIECES))
    env = {"PYTHONPATH": str(REPO), "PATH": str(Path(sys.executable).parent)}
    result = subprocess.run(
        [sys.executable, "piece.py"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["groups"] == ["inv", "web"]
    assert out["data"] == [8080, 1]
    assert out["group_data"] == {"web": {"port": 8080}}  # the imported `os` is filtered out, as in a run
    assert out["cli_value"] is True
    assert out["op_name"] == "Install x (a, 1)"
    assert out["connectors"] and out["global_arguments"]
    assert out["cli_exit"] in (0, None)


# --- the state a run leaves, and the harness's pieces ----------------------------------------------------


def test_host_outcomes_from_a_real_state() -> None:
    inventory = Inventory((["a", "b", "c"], {}))
    state = State(inventory, Config())
    a, b, c = (inventory.get_host(name) for name in "abc")
    for host in (a, b, c):
        state.activate_host(host)
    state.failed_hosts.add(b)
    state.results[c].error_ops = 1
    outcomes = pyinfra_compat.host_outcomes(state)
    assert outcomes == pyinfra_compat.HostOutcomes(stage="Setup", activated=["a", "b", "c"], failed=["b"],
                                                   with_errors=["c"])  # fmt: skip


def test_prepared_operations_in_run_order_with_their_signals() -> None:
    def deploy() -> None:
        server.shell(name="first", commands=["echo 1"])
        server.shell(name="second", commands=["echo 2"], _if=lambda: True)

    result = run_deploy(deploy)
    operations = pyinfra_compat.prepared_operations(result.state, [result.host])[result.host]
    assert [op.names for op in operations] == [["first"], ["second"]]
    assert [bool(op.global_arguments.get("_if")) for op in operations] == [False, True]
    with pyinfra_compat.host_context(result.state, result.host):
        commands = [[str(command) for command in op.command_generator()] for op in operations]
    assert commands == [["echo 1"], ["echo 2"]]
    assert [op.may_change for op in operations] == [None, None]  # no change detection (like -y)
    assert [op.changed() for op in operations] == [False, False]  # not executed
    assert pyinfra_compat.prepared_operations(result.state, []) == {}


def test_host_context_sets_pyinfras_host_and_state() -> None:
    import pyinfra

    inventory = Inventory((["a"], {}))
    state = State(inventory, Config())
    host = inventory.get_host("a")
    with pyinfra_compat.host_context(state, host, config=state.config):
        assert pyinfra.host.name == "a"
        assert pyinfra.state.inventory is inventory
        assert pyinfra_compat.current_state() is state
