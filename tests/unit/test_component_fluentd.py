"""Fluentd: the rendered fluentd.conf parsed and checked directive by directive; repository handling.

fluent-package cannot be downloaded on these machines, so ``fluentd --dry-run`` cannot run here: the
deploy runs it on the node before the config goes live, and these tests check the structure instead.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

import pytest
from pyinfra.api import DeployError, OperationError

from deploys.components.fluentd import COMPONENT, fluentd
from deploys.operations.config_files import render_template
from deploys.settings import owners
from facts.config_state import ConfigState
from facts.fluentd import FluentPackageState
from tests.unit.pyinfra_harness import run_component, run_deploy

pytestmark = pytest.mark.unit

CONF_STAGED = "/etc/fluent/.fluentd.conf.spectra-new"
ENV_STAGED = "/etc/fluent/.elasticsearch.env.spectra-new"
DATA = {
    "fluentd_elasticsearch_hosts": ["es-1.example:9200", "es-2.example:9200"],
    "fluentd_kubernetes_url": "https://10.0.0.10:6443",
    "fluentd_kubernetes_bearer_token_file": "/etc/fluent/k8s-token",
    "fluentd_elasticsearch_ca_file": "/etc/fluent/es-ca.pem",
    "fluentd_elasticsearch_user": "shipper",
    "fluentd_elasticsearch_password": 'p"a$s\\word',
}
GEMS = {"fluent-plugin-kubernetes_metadata_filter": True, "fluent-plugin-concat": True}
LIST = render_template(
    "etc/apt/sources.list.d/fluent-package.list.j2",
    keyring="/etc/apt/keyrings/fluent-package.asc",
    url="https://packages.treasuredata.com/lts/5/debian/bookworm/",
    suite="bookworm",
    component="contrib",
)
INSTALLED = {
    "files": {
        "/etc/apt/keyrings/fluent-package.asc": {"type": "file", "sha256": "k"},
        "/etc/apt/sources.list.d/fluent-package.list": {
            "type": "file",
            "mode": "644",
            "user": "root",
            "group": "root",
            "sha256": hashlib.sha256(LIST.encode()).hexdigest(),
        },
    },
    "codename": "bookworm",
    "package_version": "5.0.9-1",
    "gems": GEMS,
}


class Directive:
    def __init__(self, name: str, arg: str) -> None:
        self.name, self.arg = name, arg
        self.params: dict[str, str] = {}
        self.children: list[Directive] = []

    def find(self, name: str, arg: str | None = None) -> list[Directive]:
        return [c for c in self.children if c.name == name and (arg is None or c.arg == arg)]

    def one(self, name: str, arg: str | None = None) -> Directive:
        found = self.find(name, arg)
        assert len(found) == 1, f"{name} {arg}: {len(found)} found"
        return found[0]


def parse_fluentd_conf(text: str) -> Directive:
    """A strict parser of Fluentd's config syntax: <name arg> ... </name>, 'key value' lines."""
    root = Directive("root", "")
    stack = [root]
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("</"):
            name = line[2:-1]
            assert stack[-1].name == name, f"line {number}: </{name}> closes <{stack[-1].name}>"
            stack.pop()
        elif line.startswith("<"):
            assert line.endswith(">"), f"line {number}: {line}"
            name, _, arg = line[1:-1].partition(" ")
            directive = Directive(name, arg.strip())
            stack[-1].children.append(directive)
            stack.append(directive)
        else:
            key, _, value = line.partition(" ")
            assert key not in stack[-1].params, f"line {number}: {key} repeated"
            stack[-1].params[key] = value.strip()
    assert len(stack) == 1, f"unclosed <{stack[-1].name}>"
    return root


def run(state: dict[str, Any] | None = None, **data: Any):
    return run_deploy(
        fluentd,
        facts={FluentPackageState: state or INSTALLED, ConfigState: {"files": {}, "units": {}}},
        data={**DATA, **data},
    )


@pytest.fixture(scope="module")
def conf() -> Directive:
    return parse_fluentd_conf(run().uploads[CONF_STAGED])


def test_container_logs_tailed_with_cri_regexp(conf: Directive) -> None:
    source = [s for s in conf.find("source") if s.params["@type"] == "tail"][0]
    assert source.params["path"] == "/var/log/containers/*.log"
    assert source.params["pos_file"] == "/var/log/fluent/containers.log.pos"
    assert source.params["tag"] == "kubernetes.*"
    assert source.params["@label"] == "@CONTAINERS"
    parse = source.one("parse")
    assert parse.params["@type"] == "regexp"
    expression = parse.params["expression"].strip("/")
    match = re.match(expression.replace("(?<", "(?P<"), "2024-05-01T10:00:00.123456789+00:00 stderr P part one ")
    assert match and match.group("stream") == "stderr" and match.group("logtag") == "P"
    assert match.group("log") == "part one "
    assert parse.params["time_format"] == "%Y-%m-%dT%H:%M:%S.%N%:z"


def test_partial_lines_joined(conf: Directive) -> None:
    label = conf.one("label", "@CONTAINERS")
    concat = label.one("filter", "kubernetes.**")
    assert concat.params["@type"] == "concat"
    assert concat.params["use_partial_cri_logtag"] == "true"
    assert concat.params["partial_cri_logtag_key"] == "logtag"
    assert concat.params["partial_cri_stream_key"] == "stream"
    assert concat.params["timeout_label"] == "@KUBERNETES_METADATA"
    assert label.one("match", "kubernetes.**").params["@label"] == "@KUBERNETES_METADATA"


def test_journal_for_kubelet_containerd_and_sshd(conf: Directive) -> None:
    source = [s for s in conf.find("source") if s.params["@type"] == "systemd"][0]
    assert source.params["matches"] == (
        '[{"_SYSTEMD_UNIT": "kubelet.service"}, {"_SYSTEMD_UNIT": "containerd.service"}, '
        '{"_SYSTEMD_UNIT": "ssh.service"}]'
    )
    assert source.params["@label"] == "@ELASTICSEARCH"
    assert source.one("storage").params["persistent"] == "true"


def test_kubernetes_metadata(conf: Directive) -> None:
    label = conf.one("label", "@KUBERNETES_METADATA")
    metadata = label.one("filter", "kubernetes.**")
    assert metadata.params["@type"] == "kubernetes_metadata"
    assert metadata.params["kubernetes_url"] == "https://10.0.0.10:6443"
    assert metadata.params["bearer_token_file"] == "/etc/fluent/k8s-token"
    assert metadata.params["ca_file"] == "/etc/kubernetes/pki/ca.crt"
    assert metadata.params["verify_ssl"] == "true"
    assert label.one("match", "kubernetes.**").params["@label"] == "@ELASTICSEARCH"


def test_elasticsearch_output_tls_auth_and_bounded_buffer(conf: Directive) -> None:
    out = conf.one("label", "@ELASTICSEARCH").one("match", "**")
    assert out.params["@type"] == "elasticsearch"
    assert out.params["hosts"] == "es-1.example:9200,es-2.example:9200"
    assert out.params["scheme"] == "https"
    assert out.params["ssl_verify"] == "true"
    assert out.params["ca_file"] == "/etc/fluent/es-ca.pem"
    assert out.params["user"] == "shipper"
    assert out.params["password"] == "\"#{ENV['FLUENTD_ES_PASSWORD']}\""
    buffer = out.one("buffer")
    assert buffer.params["@type"] == "file"
    assert buffer.params["path"] == "/var/log/fluent/buffer/elasticsearch"
    assert buffer.params["chunk_limit_size"] == "8MB"
    assert buffer.params["total_limit_size"] == "2GB"
    assert buffer.params["overflow_action"] == "drop_oldest_chunk"
    assert buffer.params["retry_timeout"] == "1h"
    assert buffer.params["retry_max_times"] == "30"
    assert buffer.params["retry_type"] == "exponential_backoff"


def test_elasticsearch_output_has_no_victorialogs_hints(conf: Directive) -> None:
    out = conf.one("label", "@ELASTICSEARCH").one("match", "**")
    assert "path" not in out.params and "custom_headers" not in out.params


# VictoriaLogs from the hosts: the collectors that would bring the same lines switched off, a fixed address
VICTORIALOGS: dict[str, Any] = {
    "fluentd_output": "victorialogs",
    "fluentd_elasticsearch_hosts": ["10.96.0.13:9428"],
    "fluentd_elasticsearch_scheme": "http",
    "victorialogs_agent_enabled": False,
    "journal_upload_enabled": False,
    "zone": "eu-1a",
}


def test_victorialogs_output_is_the_elasticsearch_output_with_its_hints() -> None:
    import json

    conf = parse_fluentd_conf(run(**VICTORIALOGS).uploads[CONF_STAGED])
    out = conf.one("label", "@ELASTICSEARCH").one("match", "**")
    assert out.params["@type"] == "elasticsearch"
    assert out.params["hosts"] == "10.96.0.13:9428"
    assert out.params["scheme"] == "http"
    assert out.params["path"] == "/insert/elasticsearch/"  # the plugin posts to <path>_bulk
    assert json.loads(out.params["custom_headers"]) == {
        "VL-Msg-Field": "log,message",  # container lines carry log, journal entries message
        "VL-Time-Field": "@timestamp",
        "VL-Stream-Fields": "kubernetes.namespace_name,kubernetes.pod_name,kubernetes.container_name,"
        "hostname,systemd_unit",
        "VL-Extra-Fields": "kubernetes.node_labels.kubernetes.io/hostname=testhost,"
        "kubernetes.node_labels.topology.kubernetes.io/zone=eu-1a",
    }
    assert out.params["logstash_format"] == "true"  # what sets @timestamp
    assert out.one("buffer").params["@type"] == "file"  # the same bounded file buffer


def test_victorialogs_hints_from_settings() -> None:
    import json

    data: dict[str, Any] = {**VICTORIALOGS, "zone": None, "fluentd_victorialogs_path": "/vl/insert/elasticsearch/",
            "fluentd_victorialogs_stream_fields": ["kubernetes.namespace_name"]}  # fmt: skip
    out = parse_fluentd_conf(run(**data).uploads[CONF_STAGED]).one("label", "@ELASTICSEARCH").one("match", "**")
    headers = json.loads(out.params["custom_headers"])
    assert out.params["path"] == "/vl/insert/elasticsearch/"
    assert headers["VL-Stream-Fields"] == "kubernetes.namespace_name"
    assert headers["VL-Extra-Fields"] == "kubernetes.node_labels.kubernetes.io/hostname=testhost"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"victorialogs_agent_enabled": True}, "fluentd_output='victorialogs' with vlagent or the journal upload on"),
        ({"journal_upload_enabled": True, "journal_upload_url": "http://l:9428/insert/journald"}, "stored twice"),
        ({"fluentd_victorialogs_stream_fields": []}, "fluentd_victorialogs_stream_fields=[]: a non-empty list"),
        ({"fluentd_victorialogs_msg_fields": ["log message"]}, "fluentd_victorialogs_msg_fields=['log message']"),
        ({"fluentd_victorialogs_time_field": "a,b"}, "fluentd_victorialogs_time_field='a,b': a field name"),
        ({"fluentd_victorialogs_path": "insert/elasticsearch/"}, "fluentd_victorialogs_path='insert/elasticsearch/'"),
        ({"zone": "eu 1a"}, "zone='eu 1a': letters, digits"),
        ({"fluentd_output": "loki"}, "fluentd_output='loki': not one of 'elasticsearch', 'victorialogs'"),
    ],
)
def test_bad_victorialogs_settings_refused(data: dict[str, Any], message: str) -> None:
    with pytest.raises(DeployError, match=re.escape(message)):
        refused(**{**VICTORIALOGS, **data})


def test_every_label_used_is_defined(conf: Directive) -> None:
    text = run().uploads[CONF_STAGED]
    used = set(re.findall(r"(?:@label|timeout_label) (@[A-Z_]+)", text))
    defined = {label.arg for label in conf.find("label")}
    assert used == defined


def test_password_only_in_root_only_env_file_and_never_in_commands() -> None:
    result = run()
    assert 'p"a$s' not in result.uploads[CONF_STAGED]
    assert result.uploads[ENV_STAGED].splitlines()[-1] == 'FLUENTD_ES_PASSWORD="p\\"a$s\\\\word"'
    assert not any("a$s" in command for command in result.commands)
    chmod = next(c for c in result.commands if c.startswith(f"chown root:root {ENV_STAGED}"))
    assert chmod.endswith(f"chmod 600 {ENV_STAGED}")


def test_config_checked_with_dry_run_before_restart() -> None:
    commands = run().commands
    dry_run = next(i for i, c in enumerate(commands) if c.startswith(f"( fluentd --dry-run -q -c {CONF_STAGED} )"))
    move = commands.index(f"mv -f {CONF_STAGED} /etc/fluent/fluentd.conf")
    assert dry_run < move < commands.index("systemctl daemon-reload")
    assert "chown root:_fluentd" in commands[dry_run - 1]


def test_fresh_host_checks_repository_first_with_named_url() -> None:
    fresh: dict[str, Any] = {"files": {}, "codename": "bookworm", "package_version": None, "gems": {}}
    result = run(fresh)
    op = result.op("Install fluent-package")
    release = "https://packages.treasuredata.com/lts/5/debian/bookworm/dists/bookworm/Release"
    assert op.commands[0].startswith("sh -c ")
    assert "--connect-timeout 5" in op.commands[0] and "--fail" in op.commands[0]
    assert op.commands[0].endswith(f"spectra-repo-check {release}")
    assert "fluent-package apt repository unreachable: $1" in op.commands[0]
    list_text = result.uploads["/etc/apt/sources.list.d/.fluent-package.list.spectra-new"]
    assert (
        "deb [signed-by=/etc/apt/keyrings/fluent-package.asc] "
        "https://packages.treasuredata.com/lts/5/debian/bookworm/ bookworm contrib"
    ) in list_text
    assert any("fluent-package=5.0.9-1" in c for c in op.commands)
    assert "fluent-gem install --no-document fluent-plugin-concat --version 2.5.0" in op.commands
    assert "fluent-gem install --no-document fluent-plugin-kubernetes_metadata_filter --version 3.4.0" in op.commands


def test_unreachable_repository_fails_with_the_url(tmp_path: Any) -> None:
    """Run the generated check for real against an address nothing listens on."""
    import subprocess

    fresh: dict[str, Any] = {"files": {}, "codename": "bookworm", "package_version": None, "gems": {}}
    url = "http://127.0.0.1:9/fluent/lts/5/debian/{codename}/"
    check = run(fresh, fluentd_apt_repository_url=url).op("Install fluent-package").commands[0]
    completed = subprocess.run(["sh", "-c", check], capture_output=True, text=True, timeout=30)
    assert completed.returncode == 1
    assert (
        "fluent-package apt repository unreachable: "
        "http://127.0.0.1:9/fluent/lts/5/debian/bookworm/dists/bookworm/Release"
    ) in completed.stderr


def test_installed_is_noop_without_contacting_the_repository() -> None:
    op = run().op("Install fluent-package")
    assert op.commands == []


def test_missing_gem_only_installs_gem_and_restarts() -> None:
    state = {**INSTALLED, "gems": {**GEMS, "fluent-plugin-concat": False}}
    op = run(state).op("Install fluent-package")
    assert op.commands == [
        "fluent-gem install --no-document fluent-plugin-concat --version 2.5.0",
        "systemctl try-restart fluentd.service",
    ]


def test_key_sha_pin_is_checked() -> None:
    fresh = {"files": {}, "codename": "trixie", "package_version": None, "gems": GEMS}
    op = run(fresh, fluentd_apt_key_sha256="a" * 64).op("Install fluent-package")
    key = next(c for c in op.commands if "spectra-key" in c)
    key_url = "https://packages.treasuredata.com/GPG-KEY-fluent-package"
    assert key.endswith(f"{key_url} /etc/apt/keyrings/fluent-package.asc {'a' * 64}")
    assert "trixie" in op.commands[0]


def refused(**data: Any) -> None:
    """Run the component as node.py does: refused before any fact or operation (no fact is given, so reading
    one would fail with MissingFact instead)."""
    run_component(COMPONENT, facts={}, data={**DATA, **data})


def test_required_settings() -> None:
    with pytest.raises(DeployError, match=re.escape("fluentd_elasticsearch_hosts: required, has no value")):
        run_component(COMPONENT, facts={}, data={"fluentd_kubernetes_url": "https://x:6443"})
    with pytest.raises(DeployError, match=re.escape("fluentd_kubernetes_url: required, has no value")):
        refused(fluentd_kubernetes_url=None)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"fluentd_buffer_retry_max_times": 0}, "fluentd_buffer_retry_max_times=0: an integer, 1 or more"),
        ({"fluentd_buffer_flush_threads": "2"}, "fluentd_buffer_flush_threads='2': an integer, 1 or more"),
        ({"fluentd_concat_flush_interval": -1}, "fluentd_concat_flush_interval=-1: an integer, 0 or more"),
        ({"fluentd_buffer_overflow_action": "explode"}, "fluentd_buffer_overflow_action='explode': not one of"),
        ({"fluentd_elasticsearch_scheme": "ftp"}, "fluentd_elasticsearch_scheme='ftp': not one of 'https', 'http'"),
        ({"fluentd_log_level": "verbose"}, "fluentd_log_level='verbose': not one of"),
        ({"fluentd_elasticsearch_hosts": ["es 1"]}, "fluentd_elasticsearch_hosts: 'es 1' must be host or host:port"),
        ({"fluentd_elasticsearch_hosts": "es-1:9200"}, "fluentd_elasticsearch_hosts='es-1:9200': a list of host"),
        ({"fluentd_kubernetes_url": "http://10.0.0.10:6443"}, "fluentd_kubernetes_url='http://10.0.0.10:6443'"),
        ({"fluentd_state_dir": "/var/log/fluent d"}, "fluentd_state_dir='/var/log/fluent d': may not contain"),
        ({"fluentd_buffer_chunk_limit_size": "8 MB"}, "fluentd_buffer_chunk_limit_size='8 MB': a size"),
        ({"fluentd_buffer_retry_timeout": "1 hour"}, "fluentd_buffer_retry_timeout='1 hour': a duration"),
        ({"fluentd_elasticsearch_password": None}, "fluentd_elasticsearch_user and fluentd_elasticsearch_password"),
        ({"fluentd_journal_units": []}, "fluentd_journal_units=[]: a non-empty list of unit names"),
        ({"fluentd_gems": {"fluent-plugin-concat": ">= 2"}}, "fluentd_gems: 'fluent-plugin-concat' '>= 2' is not"),
        ({"fluentd_apt_repository_url": "ftp://mirror/{codename}/"}, "fluentd_apt_repository_url='ftp://mirror/"),
        ({"fluentd_apt_key_url": "https://mirror/key?a b"}, "fluentd_apt_key_url='https://mirror/key?a b'"),
        ({"fluentd_apt_suite": "Book Worm"}, "fluentd_apt_suite='Book Worm': a plain word"),
        ({"fluentd_apt_key_sha256": "A" * 64}, "fluentd_apt_key_sha256='AAAA"),
        ({"fluentd_codename": "bookworm\n"}, "fluentd_codename='bookworm\\n': a Debian codename"),
    ],
)
def test_bad_settings_refused_before_any_fact_or_operation(data: dict[str, Any], message: str) -> None:
    with pytest.raises(DeployError, match=re.escape(message)):
        refused(**data)


def test_password_with_a_line_break_is_refused_without_showing_it() -> None:
    with pytest.raises(DeployError, match="fluentd_elasticsearch_password: may not contain line breaks") as error:
        refused(fluentd_elasticsearch_password="hunter2\nX=1")
    assert "hunter2" not in str(error.value)


def test_checks_are_pure() -> None:
    """`spectra validate` runs them on plain data, with no host and no pyinfra context."""
    defaults = {key: owner.default for key, owner in owners().items()}
    assert COMPONENT.problems({**defaults, **DATA}) == []
    assert COMPONENT.problems({**defaults, "fluentd_enabled": False}) == []  # required only when switched on


def test_switched_off_reads_nothing_and_does_nothing() -> None:
    result = run_component(COMPONENT, facts={}, data={"fluentd_enabled": False})
    assert result.fact_reads == [] and result.ops == []


def test_component_produces_what_the_deploy_does() -> None:
    facts = {FluentPackageState: INSTALLED, ConfigState: {"files": {}, "units": {}}}
    assert run_component(COMPONENT, facts=facts, data=DATA).commands == run().commands


def test_host_codename_that_breaks_the_repository_url_stops_the_operation() -> None:
    """The host's codename is a fact: the check could only try a placeholder, the operation tries the real one."""
    state: dict[str, Any] = {"files": {}, "codename": "bookworm backports", "package_version": None, "gems": {}}
    with pytest.raises(OperationError, match="fluentd_apt_repository_url="):
        run(state)


def test_noop_config_when_files_match() -> None:
    first = run()
    files = {}
    for path, staged, mode, group in (
        ("/etc/fluent/elasticsearch.env", ENV_STAGED, "600", "root"),
        (
            "/etc/systemd/system/fluentd.service.d/spectra.conf",
            "/etc/systemd/system/fluentd.service.d/.spectra.conf.spectra-new",
            "644",
            "root",
        ),
        ("/etc/fluent/fluentd.conf", CONF_STAGED, "640", "_fluentd"),
    ):
        files[path] = {
            "type": "file",
            "mode": mode,
            "user": "root",
            "group": group,
            "sha256": hashlib.sha256(first.uploads[staged].encode()).hexdigest(),
        }
    unit = {"fluentd.service": {"active": "active", "enabled": "enabled"}}
    result = run_deploy(
        fluentd, facts={FluentPackageState: INSTALLED, ConfigState: {"files": files, "units": unit}}, data=DATA
    )
    assert result.commands == []
    assert len(result.fact_reads) == 2
