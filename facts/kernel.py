"""Kernel features (modules, filesystems): loaded, built in, loadable or missing."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pyinfra.api import FactBase, QuoteString, StringCommand

LOADED = "loaded"
BUILTIN = "builtin"
LOADABLE = "loadable"
MISSING = "missing"
STATES = (LOADED, BUILTIN, LOADABLE, MISSING)

# Kernel config symbol of a module name (CONFIG_<symbol>=y means compiled in).
CONFIG_SYMBOLS: dict[str, str] = {
    "overlay": "OVERLAY_FS",
    "br_netfilter": "BRIDGE_NETFILTER",
    "bridge": "BRIDGE",
    "nf_tables": "NF_TABLES",
    "nf_conntrack": "NF_CONNTRACK",
    "vxlan": "VXLAN",
    "ip_vs": "IP_VS",
    "ip_tables": "IP_NF_IPTABLES",
    "iptable_nat": "IP_NF_NAT",
    "iptable_filter": "IP_NF_FILTER",
    "ip6_tables": "IP6_NF_IPTABLES",
    "veth": "VETH",
    "xt_conntrack": "NETFILTER_XT_MATCH_CONNTRACK",
}

# A path that exists only while the feature is active, whatever way it got into the kernel.
# Built-in br_netfilter has no /sys/module entry, but its sysctls appear under /proc/sys/net/bridge.
PROBE_PATHS: dict[str, str] = {
    "br_netfilter": "/proc/sys/net/bridge/bridge-nf-call-iptables",
    "ip_vs": "/proc/net/ip_vs",
    "nf_conntrack": "/proc/sys/net/netfilter/nf_conntrack_max",
}

# sh -c SCRIPT sh NAME UNDERSCORED DASHED SYMBOL PROBE ...: values arrive as "$@", never spliced into the
# script. Checks, cheapest first (shell builtins on sysfs/procfs before any process is started):
# - /sys/module/NAME/initstate exists only for modules loaded from a .ko file: "loaded";
#   a /sys/module/NAME directory without it is compiled in: "builtin";
# - the feature's probe path (built-in br_netfilter has no /sys/module entry, but its sysctls appear
#   under /proc/sys/net/bridge): "builtin" (a loaded module was caught above);
# - without sysfs: /proc/modules lists modules loaded from a .ko file: "loaded";
# - compiled in: listed in modules.builtin (when /lib/modules exists), CONFIG_<SYMBOL>=y in
#   /proc/config.gz or /boot/config-$(uname -r) (read once, only if needed), or a filesystem in
#   /proc/filesystems (overlay): "builtin". Monolithic kernels (the lab's, some cloud kernels) have no
#   /lib/modules at all and modprobe fails there although the feature is present;
# - modinfo, or a NAME.ko* file under /lib/modules/$(uname -r): "loadable";
# - otherwise "missing".
_SCRIPT = (
    'r=""; cfg=""; cfg_read=0; '
    'while [ $# -gt 4 ]; do m="$1"; u="$2"; k="$3"; sym="$4"; probe="$5"; shift 5; '
    'if [ -f "/sys/module/$u/initstate" ]; then s=loaded; '
    'elif [ -d "/sys/module/$u" ]; then s=builtin; '
    'elif [ -n "$probe" ] && [ -e "$probe" ]; then s=builtin; '
    'elif grep -q "^$u " /proc/modules 2>/dev/null; then s=loaded; '
    "else "
    '  [ -n "$r" ] || r="$(uname -r)"; d="/lib/modules/$r"; '
    '  if [ -n "$sym" ] && [ "$cfg_read" = 0 ]; then cfg_read=1; '
    '    cfg="$( (zcat /proc/config.gz 2>/dev/null || cat "/boot/config-$r" 2>/dev/null) | grep "=y$")"; fi; '
    '  if [ -f "$d/modules.builtin" ] && grep -Eq "/($u|$k)\\.ko(\\.[a-z]+)?$" "$d/modules.builtin"; '
    "  then s=builtin; "
    '  elif [ -n "$sym" ] && printf "%s\\n" "$cfg" | grep -qx "CONFIG_$sym=y"; then s=builtin; '
    '  elif grep -Eq "[[:space:]]$m$" /proc/filesystems 2>/dev/null; then s=builtin; '
    '  elif modinfo "$m" >/dev/null 2>&1; then s=loadable; '
    '  elif [ -d "$d" ] && [ -n "$(find "$d" \\( -name "$u.ko*" -o -name "$k.ko*" \\) -print -quit '
    '2>/dev/null)" ]; then s=loadable; '
    "  else s=missing; fi; "
    "fi; "
    'echo "$m $s"; done'
)


class KernelFeatures(FactBase[dict[str, str]]):
    """
    For each name, one of ``loaded``, ``builtin``, ``loadable``, ``missing``; one remote command:

    .. code:: python

        {"overlay": "builtin", "br_netfilter": "loadable", "vxlan": "loaded"}

    ``config_symbols`` and ``probe_paths`` extend the built-in tables for other names.
    """

    def command(
        self,
        names: Sequence[str],
        config_symbols: Mapping[str, str] | None = None,
        probe_paths: Mapping[str, str] | None = None,
    ) -> StringCommand:
        symbols = {**CONFIG_SYMBOLS, **(config_symbols or {})}
        probes = {**PROBE_PATHS, **(probe_paths or {})}
        args: list[QuoteString] = []
        for name in names:
            args += [
                QuoteString(name),
                QuoteString(name.replace("-", "_")),
                QuoteString(name.replace("_", "-")),
                QuoteString(symbols.get(name, "")),
                QuoteString(probes.get(name, "")),
            ]
        return StringCommand("sh", "-c", QuoteString(_SCRIPT), "sh", *args)

    @staticmethod
    def default() -> dict[str, str]:
        return {}

    def process(self, output: list[str]) -> dict[str, str]:
        features: dict[str, str] = {}
        for line in output:
            parts = line.split()
            if len(parts) == 2 and parts[1] in STATES:
                features[parts[0]] = parts[1]
        return features
