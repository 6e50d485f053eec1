"""llmgw_reserve_many: many requests' reservations in one call (PostgreSQL).

Under load a gateway has dozens of requests reserving at once. Each call cost the gateway's
event loop a statement (psycopg's Python work, a wake-up) and the server a commit, which
cost more than the work. This runs the reserves queued during one pass of the loop as one
statement, one transaction: each request exactly as `llmgw_reserve` (0004) runs it alone, a
refusal changing nothing of its own. Every counter of the batch is locked first, in one
global order (the order a lone call uses: byte order of the key, then the window's start),
so batches and lone calls never wait for each other in a cycle. (Settles: 0006.)

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

LOCK = """
CREATE FUNCTION llmgw_lock_batch_counters(p_batch json) RETURNS void
LANGUAGE plpgsql AS $$
-- Lock the existing counters of every request of the batch, in the one global order.
BEGIN
    PERFORM 1
       FROM budget_counters c
       JOIN (SELECT DISTINCT k->>0 AS scope, k->>1 AS scope_id, k->>2 AS period,
                             (k->>3)::timestamp AS period_start
               FROM json_array_elements(p_batch) AS r(e),
                    json_array_elements(r.e->'counters') AS x(k)) k
         ON c.scope = k.scope AND c.scope_id = k.scope_id AND c.period = k.period
        AND c.period_start = k.period_start
      ORDER BY c.scope COLLATE "C", c.scope_id COLLATE "C", c.period COLLATE "C",
               c.period_start
        FOR UPDATE OF c;
END $$
"""

# One request's counters and limits as `llmgw_reserve`'s arrays.
_ARRAYS = """
        ARRAY(SELECT k->>0 FROM json_array_elements(r.e->'counters') WITH ORDINALITY x(k, n) ORDER BY n),
        ARRAY(SELECT k->>1 FROM json_array_elements(r.e->'counters') WITH ORDINALITY x(k, n) ORDER BY n),
        ARRAY(SELECT k->>2 FROM json_array_elements(r.e->'counters') WITH ORDINALITY x(k, n) ORDER BY n),
        ARRAY(SELECT (k->>3)::timestamp FROM json_array_elements(r.e->'counters')
                     WITH ORDINALITY x(k, n) ORDER BY n),
        ARRAY(SELECT a::bigint FROM json_array_elements_text(r.e->'amounts')
                     WITH ORDINALITY x(a, n) ORDER BY n)"""

RESERVE_MANY = f"""
CREATE FUNCTION llmgw_reserve_many(p_batch json)
RETURNS TABLE (o_index integer, o_refused integer, o_spent bigint, o_reserved bigint)
LANGUAGE plpgsql AS $$
-- Each element: {{request_id, created_at, amount, agent_id, agent_type, project_id,
-- model_group, counters, amounts (the limits)}}; one result row each, 1-based index.
DECLARE
    r record;
    x record;
BEGIN
    PERFORM llmgw_lock_batch_counters(p_batch);
    FOR r IN SELECT t.e, t.n FROM json_array_elements(p_batch) WITH ORDINALITY AS t(e, n)
             ORDER BY t.n LOOP
        SELECT * INTO x FROM llmgw_reserve(
            r.e->>'request_id', (r.e->>'created_at')::timestamp, (r.e->>'amount')::bigint,
            r.e->>'agent_id', r.e->>'agent_type', r.e->>'project_id', r.e->>'model_group',
            r.e->'counters', {_ARRAYS});
        o_index := r.n;
        o_refused := x.o_refused;
        o_spent := x.o_spent;
        o_reserved := x.o_reserved;
        RETURN NEXT;
    END LOOP;
END $$
"""


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(LOCK)
    op.execute(RESERVE_MANY)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP FUNCTION llmgw_reserve_many(json)")
    op.execute("DROP FUNCTION llmgw_lock_batch_counters(json)")
