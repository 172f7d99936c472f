"""A component's contract in one record, and the one loop that runs an ordered list of them.

Each module in ``deploys/components/`` that touches hosts ends with ``COMPONENT = Component(...)``:

* ``defaults``: its settings (``DEFAULTS``: key -> default, a comment beside each);
* ``required``: keys that need a value wherever the component is on;
* ``choices``: allowed values of some of them; ``checks``: pure functions ``(Settings) -> [problem, ...]``
  for formats and cross-field rules. ``spectra validate`` and :func:`run` apply both, so a bad value stops
  the run before any host changes, with or without the ``spectra`` command;
* ``should_run``: the one gate (its ``*_enabled`` switch, the roles it runs on): nothing else decides;
* ``fact_requests``: the facts its ``@deploy`` decides on, read for all components in ONE remote command;
* ``deploy``: the ``@deploy`` function;
* ``exposures``: ``(Settings, the host's groups) -> [Exposure, ...]``, what the component would open to anywhere
  on a production host (the firewall's). One without a recorded reason stops the run like a bad value
  (:func:`run`, ``spectra validate``); one with a reason is a warning of ``spectra validate``.

An entry file (``deploys/node.py``, ``deploys/cluster.py``) is a list of components in order and a call to
:func:`run`; the facts to read and the calls to make are both derived from that list.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from weakref import WeakKeyDictionary

from pyinfra import host
from pyinfra.api import DeployError

from deploys.prepare import FactRequest, prepared_facts
from deploys.settings import Settings, setting
from spectra import cluster_settings

Check = Callable[[Mapping[str, Any]], Iterable[str]]


def _always(_: Settings) -> bool:
    return True


def _nothing(_: Settings) -> list[FactRequest]:
    return []


@dataclass(frozen=True)
class Exposure:
    """A setting that opens a production host to anywhere, with the reason recorded for it (None: refused)."""

    key: str  # the setting that opens it: "firewall_admin_cidrs"
    what: str  # "SSH (tcp port 22) is open to anywhere (0.0.0.0/0, ::/0)"
    group: str  # the group that makes the host a production host: "env_prod"
    allowance: str  # the setting that records allowed exposures: "firewall_exposure_allowed"
    reason: str | None = None

    def message(self, source: str | None = None) -> str:
        """``key: text``; ``source``: where the value was set (``spectra validate`` knows it, a deploy does not)."""
        return f"{self.key}: {self.text(source)}"

    def text(self, source: str | None = None) -> str:
        where = f"; the value is {source}" if source else ""
        head = f"{self.what} in production (group {self.group}{where})"
        if self.reason is not None:
            return f"{head}: allowed by {self.allowance}: {self.reason!r}"
        return (
            f"{head}: refused; narrow {self.key}, or allow it with {self.allowance} = "
            f"{{{self.key!r}: '<why it must be open to anywhere>'}} in group data"
        )


Exposures = Callable[[Mapping[str, Any], Collection[str]], Iterable[Exposure]]


@dataclass(frozen=True)
class Component:
    name: str
    defaults: Mapping[str, Any]
    deploy: Callable[..., Any]
    should_run: Callable[[Settings], bool] = _always
    fact_requests: Callable[[Settings], list[FactRequest]] = _nothing
    choices: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)
    checks: tuple[Check, ...] = ()
    required: frozenset[str] = frozenset()  # keys that need a value where the component is on (REQUIRED)
    # settings judged against the host's facts (read with the others, before any deploy of the list is
    # called): ``(Settings) -> [problem, ...]``; a problem stops the host before anything is applied
    preflight: Callable[[Settings], Iterable[str]] | None = None
    # what it would open to anywhere on a production host (see :class:`Exposure`); pure, like the checks
    exposures: Exposures | None = None

    @property
    def switch(self) -> str | None:
        """The component's on/off key: the first ``*_enabled`` key of its defaults with a bool default."""
        return next(
            (key for key, default in self.defaults.items() if key.endswith("_enabled") and isinstance(default, bool)),
            None,
        )

    def enabled(self, settings: Mapping[str, Any]) -> bool:
        return self.switch is None or bool(settings[self.switch])

    def problems(self, settings: Mapping[str, Any]) -> list[str]:
        """What is wrong with this component's settings (nothing when it is switched off)."""
        if not self.enabled(settings):
            return []
        found = [
            f"{key}: required, has no value (set it in group data)"
            for key in sorted(self.required)
            if settings[key] is None
        ]
        for key, allowed in self.choices.items():
            if settings[key] not in allowed:
                found.append(f"{key}={settings[key]!r}: not one of {', '.join(repr(choice) for choice in allowed)}")
        for check in self.checks:
            try:
                found.extend(check(settings))
            except (TypeError, ValueError, KeyError, AttributeError) as error:  # a value of the wrong type
                found.append(f"cannot be checked ({type(error).__name__}: {error})")
        return found


@dataclass(frozen=True)
class Step:
    """A component in an entry file's list, with global arguments for its deploy (``_if=...``)."""

    component: Component
    arguments: Mapping[str, Any] = field(default_factory=dict)


def settings_problems(components: Iterable[Component], settings: Mapping[str, Any]) -> list[str]:
    """Every problem of the cluster settings and of the components' settings, ``component: problem``."""
    found = [f"cluster settings: {problem}" for problem in cluster_settings.check(settings)]
    for component in components:
        found.extend(f"{component.name}: {problem}" for problem in component.problems(settings))
    return found


def check_settings(components: Iterable[Component], settings: Settings | None = None) -> None:
    """Stop this host's deploy (at prepare, nothing changed yet) when any setting is invalid."""
    settings = Settings() if settings is None else settings
    found = settings_problems(components, settings)
    if found:
        raise DeployError(f"{host.name}: invalid settings:\n  " + "\n  ".join(found))


def refused_exposures(
    components: Iterable[Component], settings: Mapping[str, Any], groups: Collection[str]
) -> list[str]:
    """Exposures of switched-on components on a production host without a recorded reason."""
    found: list[str] = []
    for component in components:
        if component.exposures is None or not component.enabled(settings):
            continue
        try:
            exposed = list(component.exposures(settings, groups))
        except (TypeError, ValueError, KeyError, AttributeError):
            continue  # a value of the wrong type: the checks already refused it
        found.extend(f"{component.name}: {item.message()}" for item in exposed if item.reason is None)
    return found


def check_exposures(components: Iterable[Component], settings: Settings | None = None) -> None:
    """Stop this host's deploy (at prepare, nothing changed yet) when it is a production host opened to
    anywhere without a recorded reason."""
    settings = Settings() if settings is None else settings
    found = refused_exposures(components, settings, [str(group) for group in host.groups])
    if found:
        raise DeployError(f"{host.name}: refused, open to anywhere in production:\n  " + "\n  ".join(found))


_CLUSTER_WIDE_CHECKED: WeakKeyDictionary[Any, list[str]] = WeakKeyDictionary()


def cluster_wide_problems(members: Iterable[Any]) -> list[str]:
    """Cluster-wide settings (``cluster_settings.CLUSTER_WIDE``) with more than one value in the inventory."""
    problems = []
    members = list(members)
    for key in cluster_settings.CLUSTER_WIDE:
        seen: dict[str, list[str]] = {}
        for member in members:
            seen.setdefault(repr(setting(key, member)), []).append(str(member.name))
        if len(seen) > 1:
            detail = "; ".join(f"{', '.join(names)}: {value}" for value, names in seen.items())
            problems.append(f"{key} must be the same on every host ({detail})")
    return problems


def check_cluster_wide() -> None:
    """Once per run (the answer is the inventory's, not a host's): stop every host when they disagree."""
    state = host.state
    if state not in _CLUSTER_WIDE_CHECKED:
        _CLUSTER_WIDE_CHECKED[state] = cluster_wide_problems(state.inventory)
    if _CLUSTER_WIDE_CHECKED[state]:
        raise DeployError(f"{host.name}: " + "; ".join(_CLUSTER_WIDE_CHECKED[state]))


def run(steps: Sequence[Component | Step], base_facts: Sequence[FactRequest] = ()) -> None:
    """Check every component's settings (and the cluster-wide ones across the inventory), read the facts of
    those whose gate opens in one remote command, then call their deploys in order."""
    wanted = [step if isinstance(step, Step) else Step(step) for step in steps]
    settings = Settings()
    check_settings([step.component for step in wanted], settings)
    check_exposures([step.component for step in wanted], settings)
    check_cluster_wide()
    gated = [step for step in wanted if step.component.should_run(settings)]
    prepared_facts(*base_facts, *[request for step in gated for request in step.component.fact_requests(settings)])
    refused = [
        f"{step.component.name}: {problem}"
        for step in gated
        if step.component.preflight is not None
        for problem in step.component.preflight(settings)
    ]
    if refused:
        raise DeployError(f"{host.name}: refused before any change:\n  " + "\n  ".join(refused))
    # pyinfra identifies an operation across hosts by the line numbers of its call stack: every deploy is called
    # from the line below, so the position in the full list (host.loop) keeps components apart, the same on
    # every host whichever components its gates skip.
    for step in host.loop(wanted):
        if step in gated:
            step.component.deploy(**step.arguments)
