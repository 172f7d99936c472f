"""Kubernetes addon manifests rendered from data, for the cluster deploy to apply.

Each addon is a module in ``deploys/components/`` with ``DEFAULTS`` (so ``spectra validate`` knows its
settings), ``TEMPLATE`` (a path under ``templates/``), ``check(values)`` (its settings' problems, pure: the
cluster addons component lists :func:`addon_problems` among its checks) and ``template_context(values)``
(what the template places). Rendering needs no host: ``render_addon("coredns", Settings())`` in a
deploy, or a plain dict in tests and scripts.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from deploys.templating import render
from spectra import cluster_settings

ADDONS = {"coredns": "deploys.components.coredns"}


class AddonError(ValueError):
    """A setting an addon cannot be rendered with; the message names the setting."""


def addon_problems(name: str, values: Mapping[str, Any]) -> list[str]:
    """The problems of addon ``name``'s settings in ``values`` (a mapping holding every key the addon reads)."""
    return list(importlib.import_module(ADDONS[name]).check(values))


def render_addon(name: str, data: Mapping[str, Any] | Any) -> str:
    """The manifest of addon ``name`` (YAML, several documents) for ``data``.

    ``data``: a mapping, or pyinfra host data (anything with ``.get(key, default)``); keys the addon does
    not use are ignored, missing ones take the addon's defaults. Bad values raise ``AddonError`` naming
    the setting.
    """
    if name not in ADDONS:
        raise KeyError(f"no addon {name!r}; addons: {', '.join(sorted(ADDONS))}")
    module = importlib.import_module(ADDONS[name])
    shared = {key: data.get(key, default) for key, default in cluster_settings.DEFAULTS.items()}
    problems = cluster_settings.check(shared)
    if problems:
        raise AddonError("; ".join(problems))
    values = {**shared, **{key: data.get(key, default) for key, default in module.DEFAULTS.items()}}
    return render(module.TEMPLATE, **module.template_context(values))
