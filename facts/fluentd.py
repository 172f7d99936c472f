"""fluent-package (Fluentd LTS) state in one command: repository files, package version, plugin gems."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pyinfra.api import FactBase, QuoteString, StringCommand

from facts.config_state import split_file_lines
from facts.files import FileStates

# Arguments: gem name/version pairs. Prints the OS codename, the package status/version and, per gem,
# whether that exact version is installed in fluent-package's embedded Ruby.
_SCRIPT = (
    'printf \'OS|%s\\n\' "$(. /etc/os-release 2>/dev/null; echo "$VERSION_CODENAME")"; '
    "printf 'PKG|%s\\n' \"$(dpkg-query -W -f='${Status}|${Version}' fluent-package 2>/dev/null)\"; "
    'while [ "$#" -ge 2 ]; do '
    'if ls -d /opt/fluent/lib/ruby/gems/*/gems/"$1-$2" >/dev/null 2>&1; then s=yes; else s=no; fi; '
    'printf \'GEM|%s|%s|%s\\n\' "$1" "$2" "$s"; shift 2; done'
)


class FluentPackageState(FactBase[dict[str, Any]]):
    """
    .. code:: python

        {"files": {"/etc/apt/keyrings/fluent-package.asc": {...} or None, ...},
         "codename": "bookworm", "package_version": "5.0.9-1" or None (not installed),
         "gems": {"fluent-plugin-concat": True}}   # that exact pinned version is installed
    """

    @staticmethod
    def default() -> dict[str, Any]:
        return {"files": {}, "codename": None, "package_version": None, "gems": {}}

    def command(self, paths: Sequence[str], gems: Mapping[str, str]) -> StringCommand:
        pairs: list[QuoteString] = []
        for name, version in gems.items():
            pairs += [QuoteString(name), QuoteString(version)]
        return StringCommand(FileStates().command(list(paths)), ";", "sh", "-c", QuoteString(_SCRIPT), "sh", *pairs)

    def process(self, output: list[str]) -> dict[str, Any]:
        file_lines, other = split_file_lines(output)
        result = self.default()
        result["files"] = dict(FileStates().process(file_lines))
        for line in other:
            tag, _, rest = line.partition("|")
            if tag == "OS":
                result["codename"] = rest.strip() or None
            elif tag == "PKG":
                status, _, version = rest.partition("|")
                if status.strip().endswith("installed") and "not-installed" not in status and version:
                    result["package_version"] = version.strip()
            elif tag == "GEM":
                parts = rest.split("|")
                if len(parts) == 3:
                    result["gems"][parts[0]] = parts[2] == "yes"
        return result
