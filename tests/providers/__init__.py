"""Tests of llmgw's LiteLLM providers."""
