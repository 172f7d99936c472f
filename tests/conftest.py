"""Shared pytest set-up: unit tests first, then lab tests, and the lab teardown test last of all.

Among lab tests the node converge module runs first: it is the one that checks a first converge of fresh
nodes (deploys/site.py: node and cluster), and every other lab test converges or changes the nodes. The
cluster's own tests follow it, then the rest (compliance checks a host with a running cluster).
"""

from __future__ import annotations

import pytest

FIRST_LAB_MODULES = ("test_node_converge", "test_cluster", "test_etcd", "test_control_plane")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    def order(item: pytest.Item) -> tuple[int, int]:
        if item.get_closest_marker("lab_teardown"):
            return (2, 0)
        if item.get_closest_marker("lab"):
            stem = item.path.stem
            return (1, FIRST_LAB_MODULES.index(stem) if stem in FIRST_LAB_MODULES else len(FIRST_LAB_MODULES))
        return (0, 0)

    items.sort(key=order)  # stable: keeps file order within each group
