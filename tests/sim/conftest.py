"""Shared simulator-test fixtures: one LiteLLM import, a clean plan and records per test, and
the table's simulators for the table-driven modules."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack

import pytest

from llmgw._litellm import import_litellm
from llmgw.sim import FaultPlan, SimServer


def fresh(server: SimServer) -> SimServer:
    """The module's server with no faults and no records left by an earlier test."""
    server.set_plan(FaultPlan())
    server.reset()
    return server


@pytest.fixture(scope="session")
def litellm():
    return import_litellm()


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, SimServer]]:
    """One simulator per provider of tests.sim.providers_table for the module, started when a
    test first needs it."""
    from tests.sim.providers_table import BY_NAME

    with ExitStack() as stack:

        class Lazy(dict[str, SimServer]):
            def __missing__(self, name: str) -> SimServer:
                server = self[name] = stack.enter_context(BY_NAME[name].sim())
                return server

        yield Lazy()
