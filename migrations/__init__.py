"""Alembic migrations of the ledger schema (shipped in wheels as `llmgw_migrations`)."""
