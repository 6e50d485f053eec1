"""llmgw_reserve, llmgw_settle: a request's budget transactions as one call each (PostgreSQL).

Reserve and settle sit on every request's path. As driver statements they were nine per
request, and on a busy event loop each statement costs the gateway more than the database
(psycopg's Python work, a wake-up per round trip). As functions they are one call each, in
one round trip, with the same SQL in the same order: counters locked in the caller's fixed
order (no deadlock across processes), a refusal changes nothing, a hold settles once, a
counter warns once per window. SQLite runs the same steps as driver statements (it has no
functions, and no round trips to save).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_KEY = ("c.scope = p_scopes[i] AND c.scope_id = p_scope_ids[i] AND c.period = p_periods[i] "
        "AND c.period_start = p_starts[i]")

RESERVE = f"""
CREATE FUNCTION llmgw_reserve(
    p_request_id text, p_created_at timestamp, p_amount bigint, p_agent_id text,
    p_agent_type text, p_project_id text, p_model_group text, p_counters json,
    p_scopes text[], p_scope_ids text[], p_periods text[], p_starts timestamp[],
    p_limits bigint[],
    OUT o_refused integer, OUT o_spent bigint, OUT o_reserved bigint)
LANGUAGE plpgsql AS $$
-- Hold p_amount on every counter (made if missing), or on none: the first counter without
-- room is returned (1-based) with its spent and reserved, and nothing is written.
DECLARE
    i integer;
BEGIN
    FOR i IN 1 .. cardinality(p_scopes) LOOP
        SELECT c.spent_micros, c.reserved_micros INTO o_spent, o_reserved
          FROM budget_counters c WHERE {_KEY} FOR UPDATE;
        IF NOT FOUND THEN
            INSERT INTO budget_counters (scope, scope_id, period, period_start, spent_micros,
                                         reserved_micros, warned)
            VALUES (p_scopes[i], p_scope_ids[i], p_periods[i], p_starts[i], 0, 0, FALSE)
            ON CONFLICT DO NOTHING;
            SELECT c.spent_micros, c.reserved_micros INTO o_spent, o_reserved
              FROM budget_counters c WHERE {_KEY} FOR UPDATE;
        END IF;
        IF o_spent + o_reserved + p_amount > p_limits[i] THEN
            o_refused := i;
            RETURN;
        END IF;
    END LOOP;
    FOR i IN 1 .. cardinality(p_scopes) LOOP  -- every row is locked by us already
        UPDATE budget_counters c SET reserved_micros = c.reserved_micros + p_amount
         WHERE {_KEY};
    END LOOP;
    INSERT INTO reservations (request_id, created_at, state, amount_micros, agent_id,
                              agent_type, project_id, model_group, counters)
    VALUES (p_request_id, p_created_at, 'open', p_amount, p_agent_id, p_agent_type,
            p_project_id, p_model_group, p_counters);
    o_spent := NULL;
    o_reserved := NULL;
END $$
"""

SETTLE = f"""
CREATE FUNCTION llmgw_settle(
    p_request_id text, p_state text, p_spent bigint, p_amount bigint,
    p_scopes text[], p_scope_ids text[], p_periods text[], p_starts timestamp[],
    p_thresholds bigint[], p_rows json,
    OUT o_crossed integer[], OUT o_crossed_spent bigint[])
LANGUAGE plpgsql AS $$
-- Write the request's usage rows; if its reservation is still open, close it and move the
-- hold to spend on every counter. Returns the counters (1-based) whose spend crossed their
-- warn threshold for the first time in their window, marked warned here, once.
DECLARE
    i integer;
    s bigint;
    w boolean;
BEGIN
    o_crossed := '{{}}';
    o_crossed_spent := '{{}}';
    IF p_rows IS NOT NULL THEN
        INSERT INTO usage_events (request_id, attempt, ts, agent_id, agent_type, project_id,
                                  model_group, deployment_id, provider, model, status,
                                  error_class, error_message, prompt_tokens,
                                  completion_tokens, cached_tokens, cost_micros, saved_micros,
                                  latency_ms, stream, metadata)
        SELECT request_id, attempt, ts, agent_id, agent_type, project_id, model_group,
               deployment_id, provider, model, status, error_class, error_message,
               prompt_tokens, completion_tokens, cached_tokens, cost_micros, saved_micros,
               latency_ms, stream, metadata
          FROM json_populate_recordset(NULL::usage_events, p_rows);
    END IF;
    UPDATE reservations SET state = p_state, settled_micros = p_spent
     WHERE request_id = p_request_id AND state = 'open';
    IF NOT FOUND THEN  -- settled or reconciled already: its counters moved then
        RETURN;
    END IF;
    FOR i IN 1 .. cardinality(p_scopes) LOOP
        UPDATE budget_counters c SET reserved_micros = c.reserved_micros - p_amount,
                                     spent_micros = c.spent_micros + p_spent
         WHERE {_KEY}
        RETURNING c.spent_micros, c.warned INTO s, w;
        -- We hold the row's lock: no other process can mark it before we commit.
        IF p_spent > 0 AND NOT w AND s >= p_thresholds[i] THEN
            UPDATE budget_counters c SET warned = TRUE WHERE {_KEY};
            o_crossed := o_crossed || i;
            o_crossed_spent := o_crossed_spent || s;
        END IF;
    END LOOP;
END $$
"""


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(RESERVE)
    op.execute(SETTLE)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP FUNCTION llmgw_settle(text, text, bigint, bigint, text[], text[], text[], "
               "timestamp[], bigint[], json)")
    op.execute("DROP FUNCTION llmgw_reserve(text, timestamp, bigint, text, text, text, text, "
               "json, text[], text[], text[], timestamp[], bigint[])")
