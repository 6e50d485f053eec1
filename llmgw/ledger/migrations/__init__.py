"""The ledger's Alembic migrations (package data: env.py, script.py.mako, versions/, sql/).

Read README.md here for how revisions work and how to add one."""
