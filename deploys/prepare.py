"""Facts read by deploy code at prepare time, each read once per host per run.

Deploy code (outside operations) runs before any operation executes, so every fact it reads shows
the host as it was before the run, however often it is read. Reading the same fact twice therefore
only costs a second remote command; ``prepared_fact`` keeps the first answer for the run (keyed by
the pyinfra State, so a new run starts empty). Never call it inside an operation.
"""

from __future__ import annotations

import json
from typing import Any, TypeVar
from weakref import WeakKeyDictionary

from pyinfra import host
from pyinfra.api import DeployError

T = TypeVar("T")

_CACHE: WeakKeyDictionary[Any, dict[tuple[str, str, str], Any]] = WeakKeyDictionary()


def prepared_fact(fact: type[Any], **kwargs: Any) -> Any:
    """``host.get_fact(fact, **kwargs)``, memoised for this host for the rest of the run's prepare."""
    run_cache = _CACHE.setdefault(host.state, {})
    key = (host.name, fact.name, json.dumps(kwargs, sort_keys=True, default=str))
    if key not in run_cache:
        run_cache[key] = host.get_fact(fact, **kwargs)
    return run_cache[key]


def require(condition: bool, message: str) -> None:
    """Stop the deploy for this host with a clear message (raised at prepare, before any change)."""
    if not condition:
        raise DeployError(f"{host.name}: {message}")


def setting(key: str) -> Any:
    """A setting: host/group data first, then the current @deploy's data_defaults."""
    return host.data.get(key)
