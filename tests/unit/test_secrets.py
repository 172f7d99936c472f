"""Secrets referenced from group data (spectra/secrets.py): resolved when a setting is read (deploys.settings),
by `spectra validate`'s checks too; missing ones stop both naming the setting and what is missing; a
resolved value prints as '<secret>' and renders as itself."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from pyinfra.api import DeployError, Inventory

from deploys.components import alertmanager
from facts.addons import AddonSets
from spectra import secrets
from spectra.secrets import from_env, from_file
from spectra_cli.schema import load_schema
from spectra_cli.validation import GroupDataFile, ValidationResult, check_loaded
from tests.unit.pyinfra_harness import run_component

pytestmark = pytest.mark.unit

VAR = "SPECTRA_TEST_WEBHOOK_URL"


def receivers(url: Any, password: Any) -> list[dict[str, Any]]:
    return [
        {"name": "ops", "type": "webhook", "url": url},
        {"name": "mail", "type": "email", "to": "ops@example.org", "from": "am@example.org",
         "smarthost": "smtp.example.org:587", "auth_username": "am", "auth_password": password},
    ]  # fmt: skip


def test_env_and_file_references_resolve(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(VAR, "https://hooks.example.org/a")
    (tmp_path / "pw").write_text("s3cret\n")
    value = secrets.resolve(receivers(from_env(VAR), from_file(tmp_path / "pw")), "alertmanager_receivers")
    assert value == receivers("https://hooks.example.org/a", "s3cret")  # the final newline dropped
    assert isinstance(value[1]["auth_password"], secrets.Secret)


def test_home_is_expanded(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "token").write_text("t0ken")
    assert secrets.resolve(from_file("~/token"), "k") == "t0ken"


def test_every_missing_secret_is_named_with_the_setting(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(VAR, raising=False)
    with pytest.raises(secrets.SecretError) as error:
        secrets.resolve(receivers(from_env(VAR), from_file(tmp_path / "none")), "alertmanager_receivers")
    assert str(error.value) == (
        f"alertmanager_receivers[0].url: environment variable {VAR} is not set; "
        f"alertmanager_receivers[1].auth_password: file {tmp_path / 'none'} cannot be read (No such file or directory)"
    )
    monkeypatch.setenv(VAR, "")
    with pytest.raises(secrets.SecretError, match=f"^k: environment variable {VAR} is empty$"):
        secrets.resolve(from_env(VAR), "k")
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(secrets.SecretError, match="is empty"):
        secrets.resolve(from_file(tmp_path / "empty"), "k")


def test_bad_references_are_refused_where_they_are_written() -> None:
    for bad in ("", "A=B"):
        with pytest.raises(secrets.SecretError, match="an environment variable name"):
            from_env(bad)
    with pytest.raises(secrets.SecretError, match="a path"):
        from_file("")


def test_printing_shows_no_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(VAR, "hunter2")
    value = secrets.resolve({"password": from_env(VAR)}, "k")
    assert "hunter2" not in repr(value) and "'<secret>'" in repr(value)
    assert repr(from_env(VAR)) == f"from_env({VAR!r})" == str(from_env(VAR))
    # but templates, JSON and YAML get the text itself
    assert json.dumps(value) == '{"password": "hunter2"}'
    assert yaml.safe_dump(value) == "password: hunter2\n"
    assert yaml.dump(value, Dumper=getattr(yaml, "CSafeDumper", yaml.SafeDumper)) == "password: hunter2\n"
    assert f"{value['password']}" == "hunter2"


def test_values_without_references_are_returned_as_they_are() -> None:
    table = {"v1": {"amd64": {"kubelet": "ab" * 32}}}
    assert secrets.resolve(table, "kubernetes_sha256") is table
    assert secrets.resolve(table, "kubernetes_sha256") is table  # remembered: the table is not walked again
    assert secrets.resolve("text", "k") == "text" and secrets.resolve(None, "k") is None


# --- through the one settings reader: a deploy ---------------------------------------------------------------

DATA = {"roles": ["control_plane", "monitoring"], "ssh_hostname": "10.0.0.11"}  # its data on its own node
STAGED = "/etc/kubernetes/addons/alertmanager.yaml.spectra-new"


def push(url: Any, password: Any) -> Any:
    data = {**DATA, "alertmanager_receivers": receivers(url, password), "alertmanager_default_receiver": "ops"}
    return run_component(alertmanager.COMPONENT, facts={AddonSets: {}}, data=data)


def test_a_deploy_renders_the_secret(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(VAR, "https://hooks.example.org/secret-path")
    (tmp_path / "pw").write_text("s3cret")
    manifest = push(from_env(VAR), from_file(tmp_path / "pw")).uploads[STAGED]
    assert "https://hooks.example.org/secret-path" in manifest and "s3cret" in manifest


def test_a_deploy_with_a_missing_secret_stops_before_any_operation(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(VAR, raising=False)
    with pytest.raises(DeployError, match=f"testhost: setting alertmanager_receivers\\[0\\].url: environment "
                                          f"variable {VAR} is not set"):  # fmt: skip
        push(from_env(VAR), "literal-for-the-test")


# --- spectra validate ----------------------------------------------------------------------------------------


def validate(data: dict[str, Any]) -> ValidationResult:
    hosts = [("cp1", {"roles": ["control_plane", "etcd", "monitoring"], "ssh_hostname": "10.0.0.11"})]
    groups: dict[str, Any] = {role: (["cp1"], {}) for role in ("control_plane", "etcd", "monitoring")}
    inventory = Inventory((hosts, dict(data)), **groups)
    result = ValidationResult("inventory.py")
    files = [GroupDataFile("group_data/all.py", "all", data)]
    return check_loaded(result, inventory, load_schema("deploys.components"), files)


def test_validate_names_the_file_setting_and_missing_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(VAR, raising=False)
    result = validate({"alertmanager_receivers": receivers(from_env(VAR), "x"), "fluentd_enabled": False})
    messages = [str(issue) for issue in result.errors]
    assert (
        f"error: group_data/all.py: alertmanager_receivers: alertmanager_receivers[0].url: environment variable "
        f"{VAR} is not set"
    ) in messages
    monkeypatch.setenv(VAR, "https://hooks.example.org/x")
    result = validate({"alertmanager_receivers": receivers(from_env(VAR), "x"), "fluentd_enabled": False})
    assert result.ok, result.errors


def test_validate_checks_the_resolved_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(VAR, "not-a-url")
    result = validate({"alertmanager_receivers": receivers(from_env(VAR), "x"), "fluentd_enabled": False})
    (error,) = [str(issue) for issue in result.errors]
    assert "url='<secret>' is not an http(s) URL" in error and "not-a-url" not in error
