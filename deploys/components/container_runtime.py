"""Container runtime: containerd + runc + CNI plugins, and containerd's configuration from data.

Install method ``package`` (default): Debian's containerd, runc and containernetworking-plugins in
one apt call. ``upstream``: the release tarballs/binaries from configurable URLs, each checked
against a pinned sha256 from data before it lands (deploys.operations.download).

The cgroup driver follows the host's cgroup version (a fact): on cgroup v2 the systemd driver,
because systemd is then the single owner of the unified hierarchy and a second writer
(cgroupfs) racing it is unsupported; on v1/hybrid the cgroupfs driver, because there the v1
controllers may be mounted outside systemd's control (the lab's container-like nodes get them from
the host) and runc's systemd driver fails to create scopes. The kubelet's cgroupDriver must match
(``containerd_systemd_cgroup`` overrides the choice).
containerd restarts only when its config (or, upstream, its unit) changed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from pyinfra.api import deploy
from pyinfra.facts.deb import DebPackages

from deploys.component import Component
from deploys.operations import managed
from deploys.operations.download import download, download_paths, download_stat_only
from deploys.prepare import FactRequest, prepared_facts
from deploys.settings import Settings, require, setting
from facts.cgroup import V2, CgroupVersion
from facts.files import FileStates
from facts.platform import Platform
from facts.systemd import SystemdUnits, unit_name
from spectra.values import is_url

DEFAULTS: dict[str, Any] = {
    "container_runtime_enabled": True,  # run this component at all
    "container_runtime_install_method": "package",  # "package" (Debian) or "upstream" (release tarballs)
    "container_runtime_packages": ["containerd", "runc", "containernetworking-plugins"],  # for "package"
    # upstream: versions, URL patterns ({version}, {arch}) and sha256 per version and arch
    "containerd_version": "1.7.22",  # containerd release for "upstream"
    "containerd_download_url": (
        "https://github.com/containerd/containerd/releases/download/v{version}/containerd-{version}-linux-{arch}.tar.gz"
    ),  # where the containerd tarball comes from (point at a mirror laid out the same way)
    "containerd_sha256": {},  # {"1.7.22": {"amd64": "<sha256>", ...}}: must be filled for upstream
    "runc_version": "1.1.14",  # runc release for "upstream"
    "runc_download_url": "https://github.com/opencontainers/runc/releases/download/v{version}/runc.{arch}",
    "runc_sha256": {},  # {"1.1.14": {"amd64": "<sha256>"}}: must be filled for upstream
    "cni_plugins_version": "1.5.1",  # containernetworking/plugins release for "upstream"
    "cni_plugins_download_url": (
        "https://github.com/containernetworking/plugins/releases/download/v{version}/cni-plugins-linux-{arch}-v{version}.tgz"
    ),
    "cni_plugins_sha256": {},  # {"1.5.1": {"amd64": "<sha256>"}}: must be filled for upstream
    "upstream_bin_dir": "/usr/local/bin",  # where upstream containerd binaries go
    "upstream_runc_path": "/usr/local/sbin/runc",  # where the upstream runc binary goes
    # configuration
    "containerd_config_file": "/etc/containerd/config.toml",  # containerd's configuration
    "containerd_certs_dir": "/etc/containerd/certs.d",  # registry hosts.toml tree (config_path)
    "containerd_sandbox_image": "registry.k8s.io/pause:3.10",  # pod sandbox (pause) image
    "containerd_snapshotter": "overlayfs",  # snapshotter for CRI images
    # Clamp containers' OOM score adjustments at containerd's own: for hosts (container-like nodes) that
    # lack CAP_SYS_RESOURCE, where runc fails to start the pod sandbox's negative oom_score_adj
    "containerd_restrict_oom_score_adj": False,
    "containerd_systemd_cgroup": None,  # None: from the cgroup fact (v2 -> True); True/False to force
    "cni_bin_dir": None,  # None: /usr/lib/cni for packages, /opt/cni/bin for upstream
    "cni_conf_dir": "/etc/cni/net.d",  # where CNI network configs live
    # {"docker.io": ["https://mirror.example"]}: mirrors per registry, tried before the registry itself
    "containerd_registry_mirrors": {},
    "containerd_registry_servers": {"docker.io": "https://registry-1.docker.io"},  # upstream server per registry
    "containerd_registry_skip_verify": [],  # mirror URLs whose TLS certificate is not verified
    # {"registry.example": {"username": "u", "password": "p"}} (or "auth"/"identitytoken")
    "containerd_registry_auths": {},
}

TYPES: dict[str, type | tuple[type, ...]] = {"containerd_systemd_cgroup": bool, "cni_bin_dir": str}
REQUIRED: set[str] = set()

CHOICES: dict[str, tuple[Any, ...]] = {"container_runtime_install_method": ("package", "upstream")}

_AUTH_KEYS = ("username", "password", "auth", "identitytoken")
DOWNLOADS = ("containerd", "runc", "cni_plugins")  # the <name>_version/_download_url/_sha256 settings
# a directory name under certs.d: a registry host, with its port, or containerd's "_default"
_REGISTRY = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*(:[0-9]{1,5})?")
_SHA256 = re.compile(r"[0-9a-fA-F]{64}")


def check(settings: Mapping[str, Any]) -> list[str]:
    """Registry settings and upstream download settings (pure: ``spectra validate`` runs it too).

    Whether a sum is pinned for the host's architecture is a fact's answer: the deploy checks that."""
    problems = []
    mirrors = settings["containerd_registry_mirrors"] or {}
    servers = settings["containerd_registry_servers"] or {}
    auths = settings["containerd_registry_auths"] or {}
    if not isinstance(mirrors, Mapping):
        problems.append(f"containerd_registry_mirrors={mirrors!r}: a mapping of registry -> list of URLs")
    else:
        for registry, urls in mirrors.items():
            if not _REGISTRY.fullmatch(str(registry)):
                problems.append(f"containerd_registry_mirrors: {registry!r} is not a registry host[:port]")
            if not isinstance(urls, list | tuple) or not all(is_url(url) for url in urls):
                problems.append(f"containerd_registry_mirrors[{registry!r}]={urls!r}: a list of http(s) URLs")
    if not isinstance(servers, Mapping):
        problems.append(f"containerd_registry_servers={servers!r}: a mapping of registry -> URL")
    else:
        for registry, url in servers.items():
            if not is_url(url):
                problems.append(f"containerd_registry_servers[{registry!r}]={url!r}: an http(s) URL")
    # credentials: keys are named, values never shown
    if not isinstance(auths, Mapping):
        problems.append("containerd_registry_auths: a mapping of registry -> credentials")
    else:
        for registry, auth in auths.items():
            if not isinstance(auth, Mapping):
                problems.append(f"containerd_registry_auths[{registry!r}]: a mapping of {', '.join(_AUTH_KEYS)}")
                continue
            unknown = set(auth) - set(_AUTH_KEYS)
            if unknown:
                problems.append(
                    f"containerd_registry_auths[{registry!r}]: unknown keys {sorted(unknown)}, "
                    f"expected {', '.join(_AUTH_KEYS)}"
                )
    if settings["container_runtime_install_method"] == "upstream":
        for name in DOWNLOADS:
            pattern = settings[f"{name}_download_url"]
            try:
                url = str(pattern).format(version=settings[f"{name}_version"], arch="amd64")
            except (KeyError, IndexError, ValueError):
                url = ""
            if not is_url(url):
                problems.append(
                    f"{name}_download_url={pattern!r}: an http(s) URL with no placeholders but {{version}} and {{arch}}"
                )
            table = settings[f"{name}_sha256"] or {}
            if not isinstance(table, Mapping) or not all(isinstance(sums, Mapping) for sums in table.values()):
                problems.append(f"{name}_sha256={table!r}: a mapping of version -> {{arch: sha256}}")
                continue
            for version, sums in table.items():
                for arch, value in sums.items():
                    if not _SHA256.fullmatch(str(value).strip()):
                        problems.append(f"{name}_sha256[{version!r}][{arch!r}]={value!r}: 64 hex digits")
    return problems


def pinned_sum(table_key: str, version: str, arch: str, what: str) -> str:
    sums = (setting(table_key) or {}).get(version) or {}
    value = sums.get(arch)
    require(
        bool(value),
        f"no sha256 for {what} {version} on {arch}: fill {table_key}[{version!r}][{arch!r}] "
        "with the published sum before installing from upstream",
    )
    return str(value)


def cni_bin_dir(settings: Mapping[str, Any]) -> str:
    """Where the CNI plugins are (containerd's CNI bin_dir): ``cni_bin_dir``, else the install method's."""
    if settings["cni_bin_dir"]:
        return str(settings["cni_bin_dir"])
    return "/opt/cni/bin" if settings["container_runtime_install_method"] == "upstream" else "/usr/lib/cni"


def systemd_cgroup(cgroup_version: str | None) -> bool:
    forced = setting("containerd_systemd_cgroup")
    if forced is not None:
        return bool(forced)
    return cgroup_version == V2


def registry_hosts(registry: str) -> dict[str, Any]:
    servers = setting("containerd_registry_servers") or {}
    skip = set(setting("containerd_registry_skip_verify") or [])
    mirrors = setting("containerd_registry_mirrors").get(registry) or []
    return {
        "registry": registry,
        "server": servers.get(registry, f"https://{registry}"),
        "mirrors": [{"url": url, "skip_verify": url in skip} for url in mirrors],
    }


UNIT_FILE = "/etc/systemd/system/containerd.service"


def should_run(settings: Mapping[str, Any]) -> bool:
    return bool(settings["container_runtime_enabled"])


def fact_requests(settings: Mapping[str, Any]) -> list[FactRequest]:
    """What :func:`container_runtime` reads at prepare time (node.py reads it with other components' facts)."""
    certs_dir = settings["containerd_certs_dir"]
    mirrors = settings["containerd_registry_mirrors"] or {}
    paths = [
        settings["containerd_config_file"],
        *(f"{certs_dir}/{registry}/hosts.toml" for registry in sorted(mirrors)),
    ]
    contents: list[str] = []
    stat_only: list[str] = []
    if settings["container_runtime_install_method"] == "upstream":
        runc_path = settings["upstream_runc_path"]
        stamped = [
            *download_paths(settings["upstream_bin_dir"], "."),
            *download_paths(runc_path),
            *download_paths(settings["cni_bin_dir"] or "/opt/cni/bin", "."),
        ]
        paths += [*stamped, UNIT_FILE]
        contents = [path for path in stamped if path.endswith(".sha256")]
        stat_only = download_stat_only(runc_path)
    return [
        Platform,
        CgroupVersion,
        (FileStates, managed.snapshot_files_kwargs(paths, contents, stat_only)),
        (SystemdUnits, {"units": [unit_name("containerd")]}),
        DebPackages,
    ]


@deploy("Container runtime")
def container_runtime() -> None:
    settings = Settings()
    method = settings["container_runtime_install_method"]
    config_file = settings["containerd_config_file"]
    certs_dir = settings["containerd_certs_dir"]
    mirrors = settings["containerd_registry_mirrors"] or {}
    hosts_files = {registry: f"{certs_dir}/{registry}/hosts.toml" for registry in sorted(mirrors)}
    unit_file = UNIT_FILE
    if method == "upstream":
        bin_dir = settings["upstream_bin_dir"]
        runc_path = settings["upstream_runc_path"]
    cni_dir = cni_bin_dir(settings)
    # Everything this component decides on, in ONE remote command (node.py usually read it already, with
    # the other components' facts)
    platform, cgroup_version, files, units, installed = prepared_facts(*fact_requests(settings))
    arch = platform.get("arch")

    changes = []
    if method == "package":
        managed.apt_packages(
            name="Install containerd, runc, CNI plugins",
            packages=settings["container_runtime_packages"],
            current=installed,
        )
        runc_binary = None
    else:
        require(bool(arch), "cannot tell the host architecture for upstream downloads")
        assert arch is not None
        for key, what, dest, extract, strip in (
            ("containerd", "containerd", bin_dir, ".", 1),
            ("runc", "runc", runc_path, None, 0),
            ("cni_plugins", "CNI plugins", cni_dir, ".", 0),
        ):
            version = str(settings[f"{key}_version"])
            url = settings[f"{key}_download_url"].format(version=version, arch=arch)
            sha256 = pinned_sum(f"{key}_sha256", version, arch, what)
            changes.append(
                download(
                    name=f"Install {what} {version}",
                    url=url,
                    dest=dest,
                    sha256=sha256,
                    extract=extract,
                    strip_components=strip,
                    current=files,
                )
            )
        runc_binary = runc_path
        unit = managed.template(
            name="containerd systemd unit",
            src="etc/systemd/system/containerd.service.j2",
            dest=unit_file,
            context={"containerd_binary": f"{bin_dir}/containerd"},
            current=files,
        )
        changes.append(unit)

    auths = settings["containerd_registry_auths"] or {}
    config = managed.template(
        name="containerd config",
        src="etc/containerd/config.toml.j2",
        dest=config_file,
        mode="0600",  # may hold registry credentials
        context={
            "sandbox_image": settings["containerd_sandbox_image"],
            "snapshotter": settings["containerd_snapshotter"],
            "systemd_cgroup": systemd_cgroup(cgroup_version),
            "restrict_oom_score_adj": bool(settings["containerd_restrict_oom_score_adj"]),
            "runc_binary": runc_binary,
            "cni_bin_dir": cni_dir,
            "cni_conf_dir": settings["cni_conf_dir"],
            "certs_dir": certs_dir,
            "registry_auths": [
                (registry, [(key, auth[key]) for key in _AUTH_KEYS if key in auth])
                for registry, auth in sorted(auths.items())
            ],
        },
        current=files,
    )
    # hosts.toml files are read by containerd at each pull: no restart needed when they change
    for registry, path in hosts_files.items():
        managed.template(
            name=f"Registry mirrors for {registry}",
            src="etc/containerd/certs.d/hosts.toml.j2",
            dest=path,
            context=registry_hosts(registry),
            current=files,
        )

    managed.service(
        name="containerd running and enabled",
        unit="containerd",
        restarted=config.will_change or any(op.will_change for op in changes),
        daemon_reload=method == "upstream" and changes[-1].will_change,
        current=units,
    )


COMPONENT = Component(
    name="container_runtime",
    defaults=DEFAULTS,
    deploy=container_runtime,
    should_run=should_run,
    fact_requests=fact_requests,
    choices=CHOICES,
    checks=(check,),
)
