"""Facts read by deploy code at prepare time, each read once per host per run.

Deploy code (outside operations) runs before any operation executes, so every fact it reads shows
the host as it was before the run, however often it is read. Reading the same fact twice therefore
only costs a second remote command; ``prepared_fact`` keeps the first answer for the run (keyed by
the pyinfra State, so a new run starts empty). ``prepared_facts`` reads several facts the same way, in
ONE remote command for all of those not read yet (:mod:`facts.combined`). Never call them inside an
operation: an operation that is given a prepared value re-reads it when an earlier operation of the
run changed the host (``deploys.operations.managed.fresh``).
"""

from __future__ import annotations

import json
from typing import Any, TypeVar
from weakref import WeakKeyDictionary

from pyinfra import host

from facts.combined import bind

T = TypeVar("T")

_CACHE: WeakKeyDictionary[Any, dict[tuple[str, str, str], Any]] = WeakKeyDictionary()


def _key(fact: type[Any], kwargs: dict[str, Any]) -> tuple[str, str, str]:
    return (host.name, fact.name, json.dumps(kwargs, sort_keys=True, default=str))


def prepared_fact(fact: type[Any], **kwargs: Any) -> Any:
    """``host.get_fact(fact, **kwargs)``, memoised for this host for the rest of the run's prepare."""
    return prepared_facts((fact, kwargs))[0]


FactRequest = type[Any] | tuple[type[Any], dict[str, Any]]


def prepared_facts(*requests: FactRequest) -> list[Any]:
    """
    Several facts (``Fact`` or ``(Fact, {kwargs})``), memoised like :func:`prepared_fact`; those not read
    yet in this run are read in ONE remote command. Returns the values in the order asked.
    """
    run_cache = _CACHE.setdefault(host.state, {})
    wanted = [(request, {}) if isinstance(request, type) else (request[0], dict(request[1])) for request in requests]
    keys = [_key(fact, kwargs) for fact, kwargs in wanted]
    missing: dict[tuple[str, str, str], tuple[type[Any], dict[str, Any]]] = {}
    for key, request in zip(keys, wanted, strict=True):
        if key not in run_cache:
            missing.setdefault(key, request)
    if len(missing) == 1:
        ((key, (fact, kwargs)),) = missing.items()
        run_cache[key] = host.get_fact(fact, **kwargs)
    elif missing:
        parts = list(missing.values())
        combined: Any = bind(parts)
        for key, value in zip(missing, host.get_fact(combined, parts=parts), strict=True):
            run_cache[key] = value
    return [run_cache[key] for key in keys]
