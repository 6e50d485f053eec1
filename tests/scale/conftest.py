"""Simulators for the multi-process tests: the worker processes reach them over loopback."""

from tests.integration.conftest import anthropic_sim, openai_sim, sims  # noqa: F401
