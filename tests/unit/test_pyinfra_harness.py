"""The harness itself: pyinfra's own operations driven with given facts."""

import pytest
from pyinfra.api import deploy
from pyinfra.facts.files import Directory, File
from pyinfra.operations import files, server

from tests.unit.pyinfra_harness import MissingFact, by_kwarg, run_deploy, run_op

pytestmark = pytest.mark.unit


def test_operation_commands_for_missing_directory() -> None:
    result = run_op(files.directory, path="/etc/x", mode="755", facts={Directory: None, "files.Link": None})
    assert result.commands == ["mkdir -p /etc/x", "chmod 755 /etc/x"]


def test_noop_is_recorded() -> None:
    existing = {"mode": 755, "user": "root", "group": "root"}
    result = run_op(files.directory, path="/etc/x", mode="755", facts={Directory: existing})
    assert result.commands == []
    assert result.noops and "/etc/x" in result.noops[0]


def test_deploy_with_data_defaults_and_if() -> None:
    @deploy("Demo", data_defaults={"demo_path": "/etc/demo", "demo_flag": False})
    def demo() -> None:
        from pyinfra import host

        first = files.directory(name="make dir", path=host.data.get("demo_path"))
        server.shell(name="after dir", commands=["true"], _if=first.did_change)

    result = run_deploy(demo, facts={Directory: by_kwarg("path", {"/srv/x": None})}, data={"demo_path": "/srv/x"})
    assert result.op("make dir").commands == ["mkdir -p /srv/x"]
    assert result.op("after dir").has_if
    assert result.fact_reads == [("files.Directory", {"path": "/srv/x"})]


def test_missing_fact_names_the_fact() -> None:
    with pytest.raises(MissingFact, match="files.File"):
        run_op(files.file, path="/etc/y", facts={})


def test_upload_content_is_captured() -> None:
    from io import StringIO

    result = run_op(
        files.put,
        src=StringIO("hello\n"),
        dest="/etc/hello",
        facts={File: None, Directory: None, "files.Link": None},
    )
    assert result.uploads == {"/etc/hello": "hello\n"}
