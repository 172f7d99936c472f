"""Shared pytest set-up: lab tests run after unit tests, and the lab teardown test runs last of all."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    def order(item: pytest.Item) -> int:
        if item.get_closest_marker("lab_teardown"):
            return 2
        if item.get_closest_marker("lab"):
            return 1
        return 0

    items.sort(key=order)  # stable: keeps file order within each group
