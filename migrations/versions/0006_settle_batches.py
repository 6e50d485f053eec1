"""llmgw_settle_many: many requests' settles in one call; one lock order for every writer.

A settle locks three kinds of rows: its reservation, its counters, and (through the usage
rows' rollup trigger, 0003) rollup rows. `llmgw_settle` (0004) wrote the usage rows first,
so it locked rollup rows before counters, the opposite of a batch that locks every counter
of the batch first: the two deadlocked (1 in 200 concurrent requests). Now every writer
takes them in one order, reservations, then counters (in the global order of 0005), then
rollup rows (the trigger's upsert is sorted), as SQLite's steps and `reconcile` already
did:
- `llmgw_settle` is redefined to write its usage rows last (same arguments and results);
- `llmgw_settle_many` closes the batch's reservations in batch order, locks the counters
  of the batch, moves each still-open hold to spend as `llmgw_settle` would, then inserts
  every usage row of the batch in one statement (one trigger run for the batch);
- `llmgw_reserve_many` makes the batch's missing counters as it locks them, one at a time
  in the global order (`llmgw_make_batch_counters`), as a lone reserve does with its own.
  It made them request by request: at a window's start, two batches (or a batch and a lone
  reserve) could each make a counter the other then waited for.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_COLUMNS = ("request_id, attempt, ts, agent_id, agent_type, project_id, model_group, "
            "deployment_id, provider, model, status, error_class, error_message, "
            "prompt_tokens, completion_tokens, cached_tokens, cost_micros, saved_micros, "
            "latency_ms, stream, metadata")
_KEY = ("c.scope = p_scopes[i] AND c.scope_id = p_scope_ids[i] AND c.period = p_periods[i] "
        "AND c.period_start = p_starts[i]")
_SIGNATURE = """llmgw_settle(
    p_request_id text, p_state text, p_spent bigint, p_amount bigint,
    p_scopes text[], p_scope_ids text[], p_periods text[], p_starts timestamp[],
    p_thresholds bigint[], p_rows json,
    OUT o_crossed integer[], OUT o_crossed_spent bigint[])"""
_MOVE = f"""
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
    END LOOP;"""

_BEGIN = f"""
CREATE OR REPLACE FUNCTION {_SIGNATURE}
LANGUAGE plpgsql AS $$
DECLARE
    i integer;
    s bigint;
    w boolean;
BEGIN
    o_crossed := '{{}}';
    o_crossed_spent := '{{}}';"""
_CLOSE = """
    UPDATE reservations SET state = p_state, settled_micros = p_spent
     WHERE request_id = p_request_id AND state = 'open';"""
_ROWS = f"""
    IF p_rows IS NOT NULL THEN
        INSERT INTO usage_events ({_COLUMNS})
        SELECT {_COLUMNS} FROM json_populate_recordset(NULL::usage_events, p_rows);
    END IF;"""

# If the request's reservation is still open, close it and move the hold to spend on every
# counter; then write the request's usage rows. Returns the counters (1-based) whose spend
# crossed their warn threshold for the first time in their window, marked warned here, once.
SETTLE = f"""{_BEGIN}{_CLOSE}
    IF FOUND THEN  -- else settled or reconciled already: its counters moved then{_MOVE}
    END IF;{_ROWS}
END $$
"""

# As 0004 wrote it (usage rows first), for downgrade.
SETTLE_0004 = f"""{_BEGIN}{_ROWS}{_CLOSE}
    IF NOT FOUND THEN
        RETURN;
    END IF;{_MOVE}
END $$
"""

SETTLE_MANY = f"""
CREATE FUNCTION llmgw_settle_many(p_batch json)
RETURNS TABLE (o_index integer, o_crossed integer[], o_crossed_spent bigint[])
LANGUAGE plpgsql AS $$
-- Each element: {{request_id, state, spent, amount, counters, amounts (the warn thresholds),
-- rows (absent: none)}}; one result row each, 1-based index, as `llmgw_settle` answers.
DECLARE
    r record;
    k record;
    open_ones integer[] := '{{}}';
    s bigint;
    w boolean;
BEGIN
    FOR r IN SELECT t.e, t.n FROM json_array_elements(p_batch) WITH ORDINALITY AS t(e, n)
             ORDER BY t.n LOOP
        UPDATE reservations SET state = r.e->>'state', settled_micros = (r.e->>'spent')::bigint
         WHERE request_id = r.e->>'request_id' AND state = 'open';
        IF FOUND THEN
            open_ones := open_ones || r.n::integer;
        END IF;
    END LOOP;
    PERFORM llmgw_lock_batch_counters(p_batch);
    FOR r IN SELECT t.e, t.n FROM json_array_elements(p_batch) WITH ORDINALITY AS t(e, n)
             ORDER BY t.n LOOP
        o_index := r.n;
        o_crossed := '{{}}';
        o_crossed_spent := '{{}}';
        IF r.n::integer = ANY(open_ones) THEN
            FOR k IN SELECT x.c, x.i FROM json_array_elements(r.e->'counters')
                                          WITH ORDINALITY AS x(c, i) ORDER BY x.i LOOP
                UPDATE budget_counters c
                   SET reserved_micros = c.reserved_micros - (r.e->>'amount')::bigint,
                       spent_micros = c.spent_micros + (r.e->>'spent')::bigint
                 WHERE c.scope = k.c->>0 AND c.scope_id = k.c->>1 AND c.period = k.c->>2
                   AND c.period_start = (k.c->>3)::timestamp
                RETURNING c.spent_micros, c.warned INTO s, w;
                IF (r.e->>'spent')::bigint > 0 AND NOT w
                   AND s >= (r.e->'amounts'->>(k.i::integer - 1))::bigint THEN
                    UPDATE budget_counters c SET warned = TRUE
                     WHERE c.scope = k.c->>0 AND c.scope_id = k.c->>1 AND c.period = k.c->>2
                       AND c.period_start = (k.c->>3)::timestamp;
                    o_crossed := o_crossed || k.i::integer;
                    o_crossed_spent := o_crossed_spent || s;
                END IF;
            END LOOP;
        END IF;
        RETURN NEXT;  -- kept; sent when the function ends
    END LOOP;
    INSERT INTO usage_events ({_COLUMNS})
    SELECT {', '.join('u.' + c.strip() for c in _COLUMNS.split(','))}
      FROM json_array_elements(p_batch) WITH ORDINALITY AS t(e, n),
           json_populate_recordset(NULL::usage_events, t.e->'rows') WITH ORDINALITY AS u
     WHERE t.e->'rows' IS NOT NULL
     ORDER BY t.n, u.ordinality;
END $$
"""


MAKE = """
CREATE FUNCTION llmgw_make_batch_counters(p_batch json) RETURNS void
LANGUAGE plpgsql AS $$
-- Make (if missing) and lock every counter of the batch, one at a time in the global order.
DECLARE
    k record;
BEGIN
    FOR k IN SELECT * FROM (
                 SELECT DISTINCT x->>0 AS scope, x->>1 AS scope_id, x->>2 AS period,
                                 (x->>3)::timestamp AS period_start
                   FROM json_array_elements(p_batch) AS r(e),
                        json_array_elements(r.e->'counters') AS c(x)) d
             ORDER BY d.scope COLLATE "C", d.scope_id COLLATE "C", d.period COLLATE "C",
                      d.period_start LOOP
        INSERT INTO budget_counters (scope, scope_id, period, period_start, spent_micros,
                                     reserved_micros, warned)
        VALUES (k.scope, k.scope_id, k.period, k.period_start, 0, 0, FALSE)
        ON CONFLICT DO NOTHING;
        PERFORM 1 FROM budget_counters c
         WHERE c.scope = k.scope AND c.scope_id = k.scope_id AND c.period = k.period
           AND c.period_start = k.period_start
           FOR UPDATE;
    END LOOP;
END $$
"""

# 0005's llmgw_reserve_many, with the function that takes the batch's counters first.
_RESERVE_MANY = """
CREATE OR REPLACE FUNCTION llmgw_reserve_many(p_batch json)
RETURNS TABLE (o_index integer, o_refused integer, o_spent bigint, o_reserved bigint)
LANGUAGE plpgsql AS $$
DECLARE
    r record;
    x record;
BEGIN
    PERFORM {take}(p_batch);
    FOR r IN SELECT t.e, t.n FROM json_array_elements(p_batch) WITH ORDINALITY AS t(e, n)
             ORDER BY t.n LOOP
        SELECT * INTO x FROM llmgw_reserve(
            r.e->>'request_id', (r.e->>'created_at')::timestamp, (r.e->>'amount')::bigint,
            r.e->>'agent_id', r.e->>'agent_type', r.e->>'project_id', r.e->>'model_group',
            r.e->'counters', {arrays});
        o_index := r.n;
        o_refused := x.o_refused;
        o_spent := x.o_spent;
        o_reserved := x.o_reserved;
        RETURN NEXT;
    END LOOP;
END $$
"""
_ARRAYS = """
        ARRAY(SELECT k->>0 FROM json_array_elements(r.e->'counters') WITH ORDINALITY x(k, n) ORDER BY n),
        ARRAY(SELECT k->>1 FROM json_array_elements(r.e->'counters') WITH ORDINALITY x(k, n) ORDER BY n),
        ARRAY(SELECT k->>2 FROM json_array_elements(r.e->'counters') WITH ORDINALITY x(k, n) ORDER BY n),
        ARRAY(SELECT (k->>3)::timestamp FROM json_array_elements(r.e->'counters')
                     WITH ORDINALITY x(k, n) ORDER BY n),
        ARRAY(SELECT a::bigint FROM json_array_elements_text(r.e->'amounts')
                     WITH ORDINALITY x(a, n) ORDER BY n)"""


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(SETTLE)
    op.execute(SETTLE_MANY)
    op.execute(MAKE)
    op.execute(_RESERVE_MANY.format(take="llmgw_make_batch_counters", arrays=_ARRAYS))


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(_RESERVE_MANY.format(take="llmgw_lock_batch_counters", arrays=_ARRAYS))
    op.execute("DROP FUNCTION llmgw_make_batch_counters(json)")
    op.execute("DROP FUNCTION llmgw_settle_many(json)")
    op.execute(SETTLE_0004)
