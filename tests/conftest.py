"""Shared test setup. LiteLLM's offline switches are set before anything imports it."""

from llmgw._litellm import set_offline_env

set_offline_env()

pytest_plugins = ["tests.fixtures.databases", "tests.fixtures.redis"]
