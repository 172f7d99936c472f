"""Operations that decide from batched facts, so a no-op run costs few remote commands.

pyinfra 3 has no fact cache and its ``files.put``/``files.template``/``systemd.service`` read two
or three facts each. These operations instead take the current state as an argument (``current``),
read for many paths/units at once by one fact in the component (``snapshot_files``,
``snapshot_units``). When ``current`` is not given they read their own fact (one command).

Why a state read before the run is right here: each path, unit or key is managed by exactly one
operation of the deploy, so nothing else changes it between the read and that operation's turn;
the operation compares it with the wanted state it was given. Do not share one path between two
operations.

State that other operations may change (installed packages, units a package starts, what ``sshd -T``
reports) goes through :func:`fresh`: the value read at prepare time is used while no earlier operation
of this run has changed the host (always so on a no-op run, which then costs no remote command at
execute time), and is read again inside the operation otherwise, exactly as an operation reading its
own fact would.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pyinfra import host, logger
from pyinfra.api import FunctionCommand, OperationValueError, QuoteString, StringCommand, operation
from pyinfra.facts.deb import DebPackages

from deploys.operations.files import ConfigFile, install_file_commands
from deploys.settings import setting
from deploys.templating import render
from facts.files import FileState, FileStates, normalise_mode, state_matches
from facts.sysctl import SysctlValues, normalise_value
from facts.systemd import SystemdUnits, UnitState, is_enabled, is_running, unit_name


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()


def snapshot_files(
    paths: Iterable[str], contents: Sequence[str] = (), stat_only: Sequence[str] = ()
) -> dict[str, FileState | None]:
    """The state of all ``paths`` in one remote command (to pass as ``current=`` below)."""
    kwargs = snapshot_files_kwargs(paths, contents, stat_only)
    return host.get_fact(FileStates, **kwargs) if kwargs["paths"] else {}


def snapshot_files_kwargs(
    paths: Iterable[str], contents: Sequence[str] = (), stat_only: Sequence[str] = ()
) -> dict[str, Any]:
    """The ``FileStates`` arguments of :func:`snapshot_files` (to read it along with other facts)."""
    wanted = sorted(set(paths) | set(contents) | set(stat_only))
    return {"paths": wanted, "contents": sorted(set(contents)), "stat_only": sorted(set(stat_only) - set(contents))}


def host_changed_this_run(target: Any = None) -> bool:
    """True once an operation executed on this host (or ``target``, a Host) in this run has changed something.

    False at prepare time (nothing has run yet) and throughout a no-op run.
    """
    target = host if target is None else target
    state = target.state
    if not state.is_executing:
        return False
    for op_data in state.ops.get(target, {}).values():
        meta = op_data.operation_meta
        if meta.is_complete() and meta.did_change():
            return True
    return False


def fresh(prepared: Any, fact: type[Any], **kwargs: Any) -> Any:
    """``prepared`` (a fact value read at prepare time) while it still shows the host, else a new read.

    Call inside operations. ``prepared`` is UNSET/None when the caller has none: then always read.
    """
    if prepared is UNSET or prepared is None or host_changed_this_run():
        return host.get_fact(fact, **kwargs)
    return prepared


def snapshot_units(units: Iterable[str]) -> dict[str, UnitState | None]:
    """The state of all ``units`` in one remote command, keyed by full unit name."""
    wanted = sorted({unit_name(unit) for unit in units})
    return host.get_fact(SystemdUnits, units=wanted) if wanted else {}


def _owner(user: str | None, group: str | None) -> StringCommand:
    return StringCommand(QuoteString(user or "root"), ":", QuoteString(group or "root"), _separator="")


def _file_state(path: str, current: Any) -> FileState | None:
    if current is UNSET:
        return host.get_fact(FileStates, paths=[path]).get(path)
    if isinstance(current, Mapping) and "type" not in current:
        # a whole snapshot was passed: pick this path
        return current.get(path)
    return current


@operation()
def content(
    dest: str,
    data: str | bytes,
    mode: int | str = "0644",
    user: str = "root",
    group: str = "root",
    current: Any = UNSET,
):
    """
    Ensure ``dest`` holds exactly ``data`` with mode/owner, the way every file is written
    (``deploys.operations.files``: staged next to it, owned, renamed over it).

    + current: the FileState of ``dest`` (or a snapshot dict containing it), None when absent
    """
    state = _file_state(dest, current)
    file = ConfigFile(dest, data, mode=normalise_mode(mode) or "644", user=user, group=group)
    commands = list(install_file_commands(file, state))
    if not commands:
        host.noop(f"{dest} is up to date")
        return
    yield from commands


@operation()
def template(
    src: str,
    dest: str,
    context: Mapping[str, Any] | None = None,
    mode: int | str = "0644",
    user: str = "root",
    group: str = "root",
    current: Any = UNSET,
):
    """Render ``src`` (under templates/) with ``context`` and ensure ``dest`` holds the result."""
    rendered = render(src, **dict(context or {}))
    yield from content._inner(dest, rendered, mode=mode, user=user, group=group, current=current)


@operation()
def directory(
    path: str,
    mode: int | str = "0755",
    user: str = "root",
    group: str = "root",
    current: Any = UNSET,
):
    """Ensure a directory with mode/owner exists."""
    wanted_mode = normalise_mode(mode)
    state = _file_state(path, current)
    if state is not None and state.get("type") not in ("directory",):
        raise ValueError(f"{path} exists and is not a directory ({state.get('type')})")
    diff = state_matches(state, mode=wanted_mode, user=user, group=group)
    if not diff:
        host.noop(f"directory {path} is up to date")
        return
    if "exists" in diff:
        yield StringCommand("mkdir", "-p", QuoteString(path))
        yield StringCommand("chown", _owner(user, group), QuoteString(path))
        yield StringCommand("chmod", wanted_mode, QuoteString(path))
        return
    if "user" in diff or "group" in diff:
        yield StringCommand("chown", _owner(user, group), QuoteString(path))
    if "mode" in diff:
        yield StringCommand("chmod", wanted_mode, QuoteString(path))


@operation()
def service(
    unit: str,
    running: bool = True,
    enabled: bool = True,
    restarted: bool = False,
    daemon_reload: bool = False,
    current: Any = UNSET,
):
    """
    Ensure a systemd unit is running/stopped and enabled/disabled; restart it when ``restarted``
    (pass ``op.will_change`` of its configuration), reload systemd first when ``daemon_reload``.

    + current: the unit's UnitState (or a snapshot dict containing it), None when unknown to systemd;
      read again when an earlier operation of the run changed the host (a package install starts its
      service with the packaged configuration: this must then be a restart, not a start)
    """
    name = unit_name(unit)
    if current is not UNSET and host_changed_this_run():
        # an earlier operation (a package install that starts the service, ...) may have changed it
        current = UNSET
    if current is UNSET:
        state = host.get_fact(SystemdUnits, units=[name]).get(name)
    elif isinstance(current, Mapping) and "active" not in current:
        state = current.get(name)
    else:
        state = current

    commands: list[str | StringCommand] = []
    if daemon_reload:
        commands.append("systemctl daemon-reload")
    active = is_running(state)
    if running and not active:
        commands.append(StringCommand("systemctl", "start", QuoteString(name)))
    elif running and restarted:
        commands.append(StringCommand("systemctl", "restart", QuoteString(name)))
    elif not running and active:
        commands.append(StringCommand("systemctl", "stop", QuoteString(name)))

    if enabled and not is_enabled(state):
        commands.append(StringCommand("systemctl", "enable", QuoteString(name)))
    elif not enabled and is_enabled(state):
        commands.append(StringCommand("systemctl", "disable", QuoteString(name)))

    if not commands:
        host.noop(f"{name} is {'running' if running else 'stopped'}, {'en' if enabled else 'dis'}abled")
    yield from commands


@operation()
def sysctl(values: Mapping[str, Any], current: Any = UNSET):
    """Apply kernel parameters that differ from ``values`` now (``sysctl -w``), one command for all."""
    wanted = {key: normalise_value(value) for key, value in values.items()}
    state = fresh(current, SysctlValues, keys=sorted(wanted))
    changes = [key for key, value in wanted.items() if state.get(key) != value]
    if not changes:
        host.noop("sysctl values are already applied")
        return
    assignments = [QuoteString(StringCommand(key, "=", wanted[key], _separator="")) for key in sorted(changes)]
    yield StringCommand("sysctl", "-q", "-w", *assignments)


def _package_name(spec: str) -> tuple[str, str | None]:
    name, _, version = spec.partition("=")
    return name, version or None


# The locks apt and dpkg take (fcntl locks, as unattended-upgrades, cloud-init and apt-daily hold them while
# they run): the frontend lock, dpkg's own, the package lists' (apt-get update) and the download cache's.
APT_LOCKS = (
    "/var/lib/dpkg/lock-frontend", "/var/lib/dpkg/lock", "/var/lib/apt/lists/lock", "/var/cache/apt/archives/lock",
)  # fmt: skip
APT_LOCK_TIMEOUT_MAX = 3600


def _one_line(script: str) -> str:
    return " ".join(line.strip() for line in script.strip().splitlines())


# held: true when one of APT_LOCKS is held (a POSIX or OFD lock on its inode in /proc/locks), with $lock and
# $holder set (the pid /proc/locks gives, else a process that has the file open, and its command name).
_APT_LOCK_HELD = _one_line(f"""
held() {{
  for f in {" ".join(APT_LOCKS)}; do
    [ -e "$f" ] || continue; i=$(stat -c %i "$f") || continue;
    p=$(awk -v i="$i" '$2 != "->" && ($2 == "POSIX" || $2 == "OFDLCK")
      {{ n = split($6, a, ":"); if (a[n] == i) {{ print $5; exit }} }}' /proc/locks);
    [ -n "$p" ] || continue; lock="$f";
    if [ "$p" -le 0 ]; then p="";
      for d in /proc/[0-9]*/fd/*; do
        if [ "$(readlink "$d" 2>/dev/null)" = "$f" ]; then p="${{d#/proc/}}"; p="${{p%%/*}}"; break; fi;
      done;
    fi;
    if [ -n "$p" ]; then holder="process $p ($(cat "/proc/$p/comm" 2>/dev/null || echo gone))";
    else holder="a process outside this host's view"; fi;
    return 0;
  done;
  return 1;
}};
""")

# $1 the bound in seconds, the rest apt-get's arguments. While a lock is held, say so on stderr (at once, then
# every 10 s, naming the lock and its holder) and poll every second; at the bound, exit 75 naming them. Then
# apt-get runs with DPkg::Lock::Timeout set to what is left of the bound, so a lock taken between the poll and
# apt's own attempt is waited for too (apt >= 1.9.11) instead of failing.
_APT_LOCK_SCRIPT = _one_line(
    'bound="$1"; shift; end=$(( $(date +%s) + bound )); said=0; '
    + _APT_LOCK_HELD
    + """
while held; do
  now=$(date +%s); left=$(( end - now ));
  if [ "$left" -le 0 ]; then
    echo "spectra: $lock is still held by $holder after $bound s (apt_lock_timeout): giving up" >&2; exit 75;
  fi;
  if [ $(( now - said )) -ge 10 ]; then
    echo "spectra: waiting for $lock, held by $holder ($left s left of apt_lock_timeout=$bound)" >&2; said=$now;
  fi;
  sleep 1;
done;
left=$(( end - $(date +%s) )); [ "$left" -gt 0 ] || left=1;
export DEBIAN_FRONTEND=noninteractive; exec apt-get -q -y -o Acquire::Retries=3
-o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold -o "DPkg::Lock::Timeout=$left" "$@"
"""
)

# One line, "LOCK, held by HOLDER", when a lock is held now; nothing otherwise.
_APT_LOCK_PROBE = _APT_LOCK_HELD + ' if held; then echo "$lock, held by $holder"; fi; true'


def say_if_apt_locked(state: Any, host: Any, bound: int) -> bool:
    """At execute time, before the first apt call of an operation: when a lock is held now, log it in pyinfra's
    normal output (the waiting itself is the wrapper's, whose messages pyinfra shows only with -vvv or when
    the command fails). One cheap remote command, only on a host where packages are to be installed."""
    probe = StringCommand("sh", "-c", QuoteString(_APT_LOCK_PROBE))
    ok, output = host.run_shell_command(probe)
    held = output.stdout.strip() if ok else ""
    if held:
        logger.warning(f"{host.print_prefix}waiting up to {bound} s (apt_lock_timeout) for {held}")
    return True


def apt_lock_timeout_problems(value: Any) -> list[str]:
    """What is wrong with an ``apt_lock_timeout`` value (seconds to wait for the apt/dpkg locks)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= APT_LOCK_TIMEOUT_MAX:
        return [f"apt_lock_timeout={value!r}: a whole number of seconds from 0 to {APT_LOCK_TIMEOUT_MAX}"]
    return []


def apt_command(*arguments: str | StringCommand, timeout: int | None = None) -> StringCommand:
    """``apt-get ARGUMENTS`` (non-interactive, keeping changed configuration files) once the apt and dpkg
    locks are free, waiting at most ``timeout`` seconds (default: the ``apt_lock_timeout`` setting)."""
    bound = setting("apt_lock_timeout") if timeout is None else timeout
    problems = apt_lock_timeout_problems(bound)
    if problems:
        raise OperationValueError(problems[0])
    args = [arg if isinstance(arg, StringCommand) else QuoteString(arg) for arg in arguments]
    return StringCommand("sh", "-c", QuoteString(_APT_LOCK_SCRIPT), "spectra-apt", str(bound), *args)


def apt_lock_notice(timeout: int | None = None) -> FunctionCommand:
    """Yield before the first :func:`apt_command` of an operation: says in pyinfra's output that it waits."""
    bound = setting("apt_lock_timeout") if timeout is None else timeout
    return FunctionCommand(say_if_apt_locked, (bound,), {})


@operation()
def apt_packages(packages: Sequence[str], no_recommends: bool = True, update: bool = True, current: Any = UNSET):
    """
    Ensure Debian packages (``name`` or ``name=version``) are installed in ONE apt call; run
    ``apt-get update`` first only when something is missing (so a no-op costs one ``dpkg -l``, or none
    with ``current``). Each apt call waits for the apt/dpkg locks, up to ``apt_lock_timeout`` seconds
    (:func:`apt_command`), saying so on stderr, and fails naming the lock and its holder at the bound.

    + update: run ``apt-get update`` before installing (off where an earlier component just did)
    + current: ``DebPackages`` read at prepare time (see :func:`fresh`)
    """
    installed = fresh(current, DebPackages)
    missing = []
    for spec in packages:
        name, version = _package_name(spec)
        versions = installed.get(name) or []
        if not versions or (version is not None and version not in versions):
            missing.append(spec)
    if not missing:
        host.noop(f"packages installed: {', '.join(packages)}")
        return
    yield apt_lock_notice()
    if update:
        yield apt_command("update")
    install = ["install"] + (["--no-install-recommends"] if no_recommends else [])
    yield apt_command(*install, *missing)


@operation()
def system_user(username: str, home: str, passwd: str | None):
    """Ensure a system user and group without login (given /etc/passwd content from a snapshot)."""
    if passwd is not None and any(line.split(":", 1)[0] == username for line in passwd.splitlines()):
        host.noop(f"user {username} exists")
        return
    yield StringCommand(
        "id", "-u", QuoteString(username), ">/dev/null", "2>&1", "||",
        "useradd", "--system", "--user-group", "--no-create-home",
        "--home-dir", QuoteString(home), "--shell", "/usr/sbin/nologin", QuoteString(username),
    )  # fmt: skip
