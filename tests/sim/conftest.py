"""Shared simulator-test fixtures: one LiteLLM import, a clean plan and records per test."""

from __future__ import annotations

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
