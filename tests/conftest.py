"""Shared pytest set-up: unit tests first, then lab tests, and the lab teardown test last of all.

Among lab tests the node converge module runs first: it is the one that checks a first converge of fresh
nodes, and every other lab test (compliance, PKI, etcd, ...) converges or changes the nodes.
"""

from __future__ import annotations

import pytest

FIRST_LAB_MODULES = ("test_node_converge",)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    def order(item: pytest.Item) -> tuple[int, int]:
        if item.get_closest_marker("lab_teardown"):
            return (2, 0)
        if item.get_closest_marker("lab"):
            return (1, 0 if item.path.stem in FIRST_LAB_MODULES else 1)
        return (0, 0)

    items.sort(key=order)  # stable: keeps file order within each group
