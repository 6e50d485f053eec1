"""Simulators shared with the integration tests; a fleet config built per test."""

from tests.integration.conftest import anthropic_sim, openai_sim, sims  # noqa: F401
