"""Configuration files written the careful way: stage, validate, then move into place.

One operation (:func:`config_files`) manages a component's whole set of files and the systemd units
they belong to, reading ONE batched fact (:class:`facts.config_state.ConfigState`) instead of the three or
four facts ``files.put``/``files.template`` read per file. A component can read that fact at prepare time
along with its other facts (:func:`config_state_kwargs`, ``deploys.prepare.prepared_facts``) and pass it
as ``current``: the operation then reads nothing on a no-op run (see ``managed.fresh``).

For each file whose content differs it:

1. uploads the new content next to the target as a hidden ``.<name>.spectra-new`` file (same
   directory, so the final ``mv`` is an atomic rename and no glob like ``*.conf`` picks it up);
2. sets owner and mode on the staged file;
3. runs the file's validator against the staged path (``sshd -t``, ``nft -c -f``, ...); on failure the
   staged file is removed, the live file is untouched and the operation fails;
4. renames it over the target.

``on_change`` commands (a reload, ``sysctl -p``, ...) follow only when some file's content changed, in
the same operation, so nothing reloads on a no-op run and no extra fact is read to decide it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from pyinfra import host
from pyinfra.api import QuoteString, StringCommand, operation

from deploys.operations.files import ConfigFile, content_changes, install_file_commands
from deploys.operations.managed import fresh
from deploys.templating import render
from facts.config_state import ConfigState
from facts.systemd import unit_name


def render_template(relative_path: str, **context: Any) -> str:
    """Render ``templates/<relative_path>`` with ``context`` (deploys.templating: the one Jinja environment)."""
    return render(relative_path, **context)


def config_state_kwargs(
    files: Sequence[ConfigFile],
    absent: Sequence[str] = (),
    enabled_units: Sequence[str] = (),
    running_units: Sequence[str] = (),
) -> dict[str, Any]:
    """The ``ConfigState`` arguments :func:`config_files` reads for these files and units."""
    return {
        "paths": [file.path for file in files] + list(absent),
        "units": list(dict.fromkeys([*enabled_units, *running_units])),
    }


@operation()
def config_files(
    files: Sequence[ConfigFile],
    absent: Sequence[str] = (),
    enabled_units: Sequence[str] = (),
    running_units: Sequence[str] = (),
    on_change: Sequence[StringCommand] = (),
    daemon_reload: bool = False,
    prepare: Sequence[StringCommand] = (),
    current: dict[str, Any] | None = None,
):
    """
    Converge a set of configuration files, remove stale ones, and enable/start units.

    + files: the :class:`ConfigFile` set (content, owner, mode, validator)
    + absent: paths that must not exist (files this component used to write)
    + enabled_units: systemd units that must be enabled
    + running_units: systemd units that must be active (started if not, which loads the new config)
    + on_change: commands run when any file's content changed or a file was removed, unless a unit of
      ``running_units`` was just started (a start already reads the new configuration)
    + daemon_reload: run ``systemctl daemon-reload`` after a change (the set holds unit files/drop-ins)
    + prepare: commands run before units start and before ``on_change``, whenever either happens
    + current: the ``ConfigState`` of :func:`config_state_kwargs` read at prepare time (re-read when an
      earlier operation of the run changed the host)
    """
    state = fresh(current, ConfigState, **config_state_kwargs(files, absent, enabled_units, running_units))
    current_files = state.get("files", {})
    current_units = state.get("units", {})

    changed = False
    for file in files:
        current = current_files.get(file.path)
        changed = changed or content_changes(file, current)
        yield from install_file_commands(file, current)

    for path in absent:
        if current_files.get(path) is not None:
            changed = True
            yield StringCommand("rm", "-f", QuoteString(path))

    if changed and daemon_reload:
        yield StringCommand("systemctl", "daemon-reload")

    for unit in enabled_units:
        if (current_units.get(unit_name(unit)) or {}).get("enabled") != "enabled":
            yield StringCommand("systemctl", "enable", QuoteString(unit))

    to_start = [unit for unit in running_units if (current_units.get(unit_name(unit)) or {}).get("active") != "active"]
    if changed or to_start:
        yield from prepare
    started = bool(to_start)
    for unit in to_start:
        yield StringCommand("systemctl", "start", QuoteString(unit))

    if changed and not started:
        yield from on_change

    if not changed and not started:
        host.noop("configuration files and units already as desired")


def shell_script(script: str, *args: str | QuoteString, name: str = "spectra-check") -> StringCommand:
    """``sh -c '<constant script>' name arg...``: user values travel as quoted positional args."""
    quoted: Iterable[Any] = (arg if isinstance(arg, QuoteString) else QuoteString(arg) for arg in args)
    return StringCommand("sh", "-c", QuoteString(script), name, *quoted)
