"""How the checks read a host: the facts the deploys use, run through testinfra, cached per host.

Output that ``facts/`` (or pyinfra) already parses is read with that fact's own command and ``process()``:
unit state (:class:`facts.systemd.SystemdUnits`), file type, mode, owner and content
(:class:`facts.files.FileStates`), sysctls (:class:`facts.sysctl.SysctlValues`), swap
(:class:`facts.swap.Swap`), container detection (:class:`facts.security.AuditSupport`), ``sshd -T``
(:class:`facts.security.SshdState`'s parser) and installed packages (``pyinfra.facts.deb.DebPackages``).
Facts asked together go to the host as one command (:mod:`facts.combined`), so a check module can batch its
reads. Only what no fact reads is parsed in compliance: listening sockets (:mod:`compliance.listeners`),
glob and directory listings (the two facts below), loaded audit rules and the nftables ruleset (in their
checks).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

import yaml
from pyinfra.api import FactBase, QuoteString, StringCommand
from pyinfra.facts.deb import DebPackages

from compliance.context import HostContext
from compliance.listeners import Listener, parse_ss
from facts.combined import Facts, Part, process_parts
from facts.files import FileState, FileStates
from facts.security import AuditSupport, SshdState
from facts.swap import Swap, SwapState
from facts.sysctl import SysctlValues
from facts.systemd import SystemdUnits, UnitState, unit_name


class HostUnreachable(Exception):
    """ssh could not reach the host (or authenticate it): every check on it fails with this reason."""


class CommandResult(Protocol):
    rc: int
    stdout: str
    stderr: str


class Reader(Protocol):
    """Where a probe's reads go: a host over ssh (:class:`SshReader`), or a fake one in the unit tests."""

    def run(self, command: str) -> CommandResult: ...

    def facts(self, parts: Sequence[Part]) -> list[Any]:
        """The result of each fact of ``parts``, in order."""
        ...


class SshReader:
    """A testinfra host: commands as given, facts as one command per batch (:class:`facts.combined.Facts`).

    Once ssh failed to reach the host (exit 255), every later read fails at once with that error."""

    def __init__(self, host: Any, name: str) -> None:
        self.host = host
        self.name = name
        self._unreachable = ""

    def run(self, command: str) -> CommandResult:
        if self._unreachable:
            raise HostUnreachable(self._unreachable)
        try:
            return self.host.run(command)  # type: ignore[no-any-return]
        except RuntimeError as exc:  # testinfra's ssh backend raises with the CommandResult when ssh exits 255
            result = exc.args[0] if exc.args else None
            stderr = getattr(result, "stderr", None)
            if stderr is None:
                raise
            self._unreachable = f"cannot reach {self.name} over ssh: {' '.join(str(stderr).split())[:300]}"
            raise HostUnreachable(self._unreachable) from None

    def facts(self, parts: Sequence[Part]) -> list[Any]:
        result = self.run(Facts().command(parts=parts).get_raw_value())
        return process_parts(parts, result.stdout.splitlines())


# $1 pattern, $2 its directory, $3 its last component, repeated: the last component is left unquoted so
# the shell expands it (our patterns are constants without spaces); "pattern|path" for each existing match.
_GLOB_SCRIPT = (
    'while [ "$#" -ge 3 ]; do g="$1"; d="$2"; n="$3"; shift 3; '
    'for p in "$d"/$n; do if [ -e "$p" ] || [ -L "$p" ]; then printf \'%s|%s\\n\' "$g" "$p"; fi; done; done; true'
)


class PathsMatching(FactBase[dict[str, list[str]]]):
    """Existing paths matching shell globs whose last component is the pattern (``.../kubelet.service.d/*.conf``),
    per pattern: ``{"/etc/x.d/*.conf": ["/etc/x.d/10-a.conf"]}``."""

    def command(self, patterns: Sequence[str]) -> StringCommand:
        args: list[QuoteString] = []
        for pattern in patterns:
            directory, _, name = pattern.rpartition("/")
            args += [QuoteString(pattern), QuoteString(directory), QuoteString(name)]
        return StringCommand("sh", "-c", QuoteString(_GLOB_SCRIPT), "sh", *args)

    @staticmethod
    def default() -> dict[str, list[str]]:
        return {}

    def process(self, output: list[str]) -> dict[str, list[str]]:
        found: dict[str, list[str]] = {}
        for line in output:
            pattern, sep, path = line.partition("|")
            if sep:
                found.setdefault(pattern, []).append(path)
        return found


class PathsBelow(FactBase[list[str]]):
    """``directory`` and every path below it on the same filesystem; ``[]`` when it does not exist."""

    def command(self, directory: str) -> StringCommand:
        script = 'if [ -e "$1" ]; then find "$1" -xdev -print; fi; true'
        return StringCommand("sh", "-c", QuoteString(script), "sh", QuoteString(directory))

    @staticmethod
    def default() -> list[str]:
        return []

    def process(self, output: list[str]) -> list[str]:
        return [line for line in output if line]


def is_glob(pattern: str) -> bool:
    return any(char in pattern for char in "*?[")


class Probe:
    """Cached reads of one host. Reads of the same kind asked together (units, sysctls, files) are one
    remote command; what was read once is never read again."""

    def __init__(self, reader: Reader, context: HostContext) -> None:
        self.reader = reader
        self.context = context
        self._cache: dict[str, Any] = {}
        self._units: dict[str, UnitState | None] = {}
        self._sysctls: dict[str, str | None] = {}
        self._files: dict[str, FileState | None] = {}
        self._contents: dict[str, str | None] = {}
        self._globs: dict[str, list[str]] = {}

    def run(self, command: str) -> CommandResult:
        return self.reader.run(command)

    def fact(self, part: Part) -> Any:
        (result,) = self.reader.facts([part])
        return result

    def _once(self, key: str, read: Callable[[], Any]) -> Any:
        if key not in self._cache:
            self._cache[key] = read()
        return self._cache[key]

    # --- through facts/ -------------------------------------------------------------------------

    def units(self, names: Iterable[str]) -> dict[str, UnitState | None]:
        """State of each unit (``.service`` added when no suffix is given); None: systemd does not know it."""
        wanted = [unit_name(name) for name in names]
        missing = [name for name in dict.fromkeys(wanted) if name not in self._units]
        if missing:
            found = self.fact((SystemdUnits, {"units": missing}))
            self._units.update({name: found.get(name) for name in missing})
        return {name: self._units[name] for name in wanted}

    def sysctls(self, keys: Iterable[str]) -> dict[str, str | None]:
        """Current value of each key; None when this kernel (or network namespace) has no such key."""
        wanted = list(keys)
        missing = [key for key in dict.fromkeys(wanted) if key not in self._sysctls]
        if missing:
            found = self.fact((SysctlValues, {"keys": missing}))
            self._sysctls.update({key: found.get(key) for key in missing})
        return {key: self._sysctls[key] for key in wanted}

    def files(self, paths: Iterable[str]) -> dict[str, FileState]:
        """The paths among ``paths`` that exist (a symbolic link: what it points to), in the order asked."""
        wanted = list(paths)
        missing = [path for path in dict.fromkeys(wanted) if path not in self._files]
        if missing:
            found = self.fact((FileStates, {"paths": missing, "sha256": False}))
            self._files.update({path: found.get(path) for path in missing})
        return {path: state for path in wanted if (state := self._files[path]) is not None}

    def content(self, path: str) -> str | None:
        """A regular file's text (None when it is missing or not a regular file); its state is kept too."""
        if path not in self._contents:
            found = self.fact((FileStates, {"paths": [path], "contents": [path], "sha256": False}))
            state = found.get(path)
            self._files[path] = state
            self._contents[path] = state.get("content") if state else None
        return self._contents[path]

    def read_yaml(self, path: str) -> dict[str, Any]:
        def read() -> dict[str, Any]:
            text = self.content(path)
            if text is None:
                raise RuntimeError(f"cannot read {path}")
            loaded = yaml.safe_load(text) or {}
            if not isinstance(loaded, dict):
                raise RuntimeError(f"{path} is not a YAML mapping")
            return loaded

        return self._once("yaml:" + path, read)  # type: ignore[no-any-return]

    def packages(self) -> dict[str, Any]:
        """Installed Debian packages: name -> versions."""
        return self._once("packages", lambda: self.fact((DebPackages, {})))  # type: ignore[no-any-return]

    def installed(self, package: str) -> bool:
        return package in self.packages()

    def swap(self) -> SwapState:
        return self._once("swap", lambda: self.fact((Swap, {})))  # type: ignore[no-any-return]

    def container(self) -> str | None:
        """The container technology the host runs in (systemd-detect-virt), None on a VM or bare metal."""
        return self._once("audit", lambda: self.fact((AuditSupport, {})))["container"]  # type: ignore[no-any-return]

    def sshd(self) -> dict[str, str]:
        """sshd's effective configuration (``sshd -T``): lowercase keyword -> value.

        Every keyword, where SshdState's own command keeps only those the SSH hardening manages: its parser
        reads ``sshd -T`` lines tagged ``E<TAB>``, so the lines are tagged and handed to it."""

        def read() -> dict[str, str]:
            result = self.run("sshd -T 2>&1 || /usr/sbin/sshd -T")
            if result.rc != 0:
                raise RuntimeError(f"sshd -T exited {result.rc}: {result.stdout.strip()[-300:]}")
            lines = [f"E\t{line}" for line in result.stdout.splitlines() if line.strip()]
            return dict(SshdState().process(lines)["effective"])

        return self._once("sshd", read)  # type: ignore[no-any-return]

    # --- parsed here: no fact reads these -------------------------------------------------------

    def matching(self, patterns: Iterable[str]) -> dict[str, FileState]:
        """Existing paths among ``patterns``, where a pattern's last component may be a shell glob."""
        patterns = list(patterns)
        globs = [pattern for pattern in dict.fromkeys(patterns) if is_glob(pattern) and pattern not in self._globs]
        if globs:
            found = self.fact((PathsMatching, {"patterns": globs}))
            self._globs.update({pattern: found.get(pattern, []) for pattern in globs})
        paths = [path for pattern in patterns for path in (self._globs[pattern] if is_glob(pattern) else [pattern])]
        return self.files(paths)

    def tree(self, directory: str) -> dict[str, FileState]:
        """``directory`` and everything below it (empty when it does not exist)."""
        paths = self._once("tree:" + directory, lambda: self.fact((PathsBelow, {"directory": directory})))
        return self.files(paths)

    def listeners(self) -> list[Listener]:
        def read() -> list[Listener]:
            result = self.run("ss -Htulnp")
            if result.rc != 0:
                raise RuntimeError(f"ss -Htulnp exited {result.rc}: {result.stderr.strip()}")
            return parse_ss(result.stdout)

        return self._once("ss", read)  # type: ignore[no-any-return]
