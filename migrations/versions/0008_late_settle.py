"""A late settle after reconcile wins cleanly (issue 20, defect 9).

`llmgw db reconcile` books an open hold at its reserved amount, with a `Reconciled` ledger
row. If the hold's request was still in flight, its settle used to find the reservation
closed, move nothing and then fail on the row's (request_id, attempt): a paid answer became
an error and the ledger kept the worst case. Now the settle that finds its reservation
reconciled takes it back, in its one transaction:
- the reservation gets the settle's state and amount (`llmgw_take_back`);
- each counter's spent loses the amount booked and gains the real one (its reserved went
  with the reconcile);
- the `Reconciled` row is deleted and taken out of the rollup (`llmgw_drop_reconciled`),
  then the request's own rows are written as usual.
`llmgw_settle` and `llmgw_settle_many` are redefined with that path (same arguments and
results); locks stay in the one order: reservations, counters, rollup rows (sorted).
SQLite does the same in `BudgetStore._settle_alone`.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_COLUMNS = ("request_id, attempt, ts, agent_id, agent_type, project_id, model_group, "
            "deployment_id, provider, model, status, error_class, error_message, "
            "prompt_tokens, completion_tokens, cached_tokens, cost_micros, saved_micros, "
            "latency_ms, stream, metadata")
_U_COLUMNS = ", ".join("u." + c.strip() for c in _COLUMNS.split(","))
_KEY = ("c.scope = p_scopes[i] AND c.scope_id = p_scope_ids[i] AND c.period = p_periods[i] "
        "AND c.period_start = p_starts[i]")
_SIGNATURE = """llmgw_settle(
    p_request_id text, p_state text, p_spent bigint, p_amount bigint,
    p_scopes text[], p_scope_ids text[], p_periods text[], p_starts timestamp[],
    p_thresholds bigint[], p_rows json,
    OUT o_crossed integer[], OUT o_crossed_spent bigint[])"""

TAKE_BACK = """
CREATE FUNCTION llmgw_take_back(p_request_id text, p_state text, p_spent bigint)
RETURNS bigint
LANGUAGE plpgsql AS $$
-- A reservation reconciled while its request was in flight goes to the request's settle:
-- it gets the settle's state and amount. Returns what the reconcile booked (NULL if the
-- reservation is not reconciled: settled by its own request already).
DECLARE
    v_booked bigint;
BEGIN
    SELECT settled_micros INTO v_booked FROM reservations
     WHERE request_id = p_request_id AND state = 'reconciled'
       FOR UPDATE;
    IF FOUND THEN
        UPDATE reservations SET state = p_state, settled_micros = p_spent
         WHERE request_id = p_request_id;
    END IF;
    RETURN v_booked;
END $$
"""

# The rollup (0003) as its trigger adds rows: key, measures, request credits (1 for the
# first row of its request, or the first with that column's value, among lower ids).
_NULL_BITS = (("agent_type", 1), ("deployment_id", 2), ("provider", 4), ("model", 8))
_MEASURES = ("attempts", "errors", "cached", "refused", "prompt_tokens", "completion_tokens",
             "cost_micros", "saved_micros")
_CREDITS = (("req_first", None), ("req_agent_type", "agent_type"),
            ("req_model_group", "model_group"), ("req_deployment", "deployment_id"),
            ("req_provider", "provider"), ("req_model", "model"))
_KEYS = ("project_id", "agent_id", "day", "agent_type", "model_group", "deployment_id",
         "provider", "model", "null_keys")


def _gone_rows() -> str:
    """The batch's `Reconciled` rows, summed per rollup key, in the trigger's key order."""
    key = ["n.project_id", "n.agent_id", "CAST(n.ts AS DATE)", "COALESCE(n.agent_type, '')",
           "n.model_group", "COALESCE(n.deployment_id, '')", "COALESCE(n.provider, '')",
           "COALESCE(n.model, '')",
           " + ".join(f"CASE WHEN n.{c} IS NULL THEN {bit} ELSE 0 END" for c, bit in _NULL_BITS)]

    def count(condition: str) -> str:
        return f"SUM(CASE WHEN {condition} THEN 1 ELSE 0 END)"

    measures = [count("n.status IN ('ok', 'error', 'partial')"), count("n.status = 'error'"),
                count("n.status = 'cached'"), count("n.status = 'refused'"),
                "SUM(n.prompt_tokens)", "SUM(n.completion_tokens)", "SUM(n.cost_micros)",
                "SUM(n.saved_micros)"]
    for _, column in _CREDITS:
        same = f" AND e.{column} IS NOT DISTINCT FROM n.{column}" if column else ""
        measures.append(count(f"NOT EXISTS (SELECT 1 FROM usage_events e WHERE "
                              f"e.request_id = n.request_id AND e.id < n.id{same})"))
    names = [*_KEYS, *_MEASURES, *(name for name, _ in _CREDITS)]
    positions = ", ".join(str(i + 1) for i in range(len(_KEYS)))
    return (f"SELECT {', '.join(f'{v} AS {n}' for v, n in zip(key + measures, names))} "
            "FROM usage_events n WHERE n.request_id = ANY(p_request_ids) "
            "AND n.status = 'error' AND n.error_class = 'Reconciled' "
            f"GROUP BY {positions} ORDER BY {positions}")


DROP_RECONCILED = f"""
CREATE FUNCTION llmgw_drop_reconciled(p_request_ids text[]) RETURNS void
LANGUAGE plpgsql AS $$
-- Delete these requests' `Reconciled` rows and take them out of the rollup, its rows
-- updated in the trigger's key order (a reconciled row has no deployment: its key sorts
-- before its request's own rows of the same day and group, which the insert adds next).
DECLARE
    g record;
BEGIN
    FOR g IN {_gone_rows()} LOOP
        UPDATE usage_rollup u SET {', '.join(f'{m} = u.{m} - g.{m}' for m in
                                             (*_MEASURES, *(n for n, _ in _CREDITS)))}
         WHERE {' AND '.join(f'u.{k} = g.{k}' for k in _KEYS)};
    END LOOP;
    DELETE FROM usage_events
     WHERE request_id = ANY(p_request_ids) AND status = 'error'
       AND error_class = 'Reconciled';
END $$
"""

# If the reservation is open, close it and move the hold to spend; if a reconcile booked it
# meanwhile, take it back: spent gets the real amount instead of the booked one, and the
# Reconciled row goes. Then write the request's usage rows. Returns the counters (1-based)
# whose spend crossed their warn threshold for the first time in their window.
SETTLE = f"""
CREATE OR REPLACE FUNCTION {_SIGNATURE}
LANGUAGE plpgsql AS $$
DECLARE
    i integer;
    s bigint;
    w boolean;
    v_held bigint := p_amount;
    v_spent bigint := p_spent;
    v_booked bigint;
BEGIN
    o_crossed := '{{}}';
    o_crossed_spent := '{{}}';
    UPDATE reservations SET state = p_state, settled_micros = p_spent
     WHERE request_id = p_request_id AND state = 'open';
    IF NOT FOUND THEN  -- settled already (its counters moved then), or reconciled
        v_booked := llmgw_take_back(p_request_id, p_state, p_spent);
        v_held := 0;  -- released by the reconcile
        v_spent := p_spent - v_booked;  -- NULL: nothing to move
    END IF;
    IF v_spent IS NOT NULL THEN
        FOR i IN 1 .. cardinality(p_scopes) LOOP
            UPDATE budget_counters c SET reserved_micros = c.reserved_micros - v_held,
                                         spent_micros = c.spent_micros + v_spent
             WHERE {_KEY}
            RETURNING c.spent_micros, c.warned INTO s, w;
            -- We hold the row's lock: no other process can mark it before we commit.
            IF v_spent > 0 AND NOT w AND s >= p_thresholds[i] THEN
                UPDATE budget_counters c SET warned = TRUE WHERE {_KEY};
                o_crossed := o_crossed || i;
                o_crossed_spent := o_crossed_spent || s;
            END IF;
        END LOOP;
    END IF;
    IF v_booked IS NOT NULL THEN
        PERFORM llmgw_drop_reconciled(ARRAY[p_request_id]);
    END IF;
    IF p_rows IS NOT NULL THEN
        INSERT INTO usage_events ({_COLUMNS})
        SELECT {_COLUMNS} FROM json_populate_recordset(NULL::usage_events, p_rows);
    END IF;
END $$
"""

SETTLE_MANY = f"""
CREATE OR REPLACE FUNCTION llmgw_settle_many(p_batch json)
RETURNS TABLE (o_index integer, o_crossed integer[], o_crossed_spent bigint[])
LANGUAGE plpgsql AS $$
-- Each element: {{request_id, state, spent, amount, counters, amounts (the warn thresholds),
-- rows (absent: none)}}; one result row each, 1-based index, as `llmgw_settle` answers.
DECLARE
    r record;
    k record;
    held bigint[] := '{{}}';  -- by batch index: what leaves reserved, and what joins spent
    moved bigint[] := '{{}}';  -- (NULL: nothing moves, the hold was settled already)
    late text[] := '{{}}';  -- requests whose reconciled reservation this batch took back
    b bigint;
    s bigint;
    w boolean;
BEGIN
    FOR r IN SELECT t.e, t.n FROM json_array_elements(p_batch) WITH ORDINALITY AS t(e, n)
             ORDER BY t.n LOOP
        UPDATE reservations SET state = r.e->>'state', settled_micros = (r.e->>'spent')::bigint
         WHERE request_id = r.e->>'request_id' AND state = 'open';
        IF FOUND THEN
            held[r.n] := (r.e->>'amount')::bigint;
            moved[r.n] := (r.e->>'spent')::bigint;
        ELSE
            b := llmgw_take_back(r.e->>'request_id', r.e->>'state', (r.e->>'spent')::bigint);
            IF b IS NOT NULL THEN
                held[r.n] := 0;
                moved[r.n] := (r.e->>'spent')::bigint - b;
                late := late || (r.e->>'request_id');
            END IF;
        END IF;
    END LOOP;
    PERFORM llmgw_lock_batch_counters(p_batch);
    FOR r IN SELECT t.e, t.n FROM json_array_elements(p_batch) WITH ORDINALITY AS t(e, n)
             ORDER BY t.n LOOP
        o_index := r.n;
        o_crossed := '{{}}';
        o_crossed_spent := '{{}}';
        IF moved[r.n] IS NOT NULL THEN
            FOR k IN SELECT x.c, x.i FROM json_array_elements(r.e->'counters')
                                          WITH ORDINALITY AS x(c, i) ORDER BY x.i LOOP
                UPDATE budget_counters c
                   SET reserved_micros = c.reserved_micros - held[r.n],
                       spent_micros = c.spent_micros + moved[r.n]
                 WHERE c.scope = k.c->>0 AND c.scope_id = k.c->>1 AND c.period = k.c->>2
                   AND c.period_start = (k.c->>3)::timestamp
                RETURNING c.spent_micros, c.warned INTO s, w;
                IF moved[r.n] > 0 AND NOT w
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
    IF cardinality(late) > 0 THEN
        PERFORM llmgw_drop_reconciled(late);
    END IF;
    INSERT INTO usage_events ({_COLUMNS})
    SELECT {_U_COLUMNS}
      FROM json_array_elements(p_batch) WITH ORDINALITY AS t(e, n),
           json_populate_recordset(NULL::usage_events, t.e->'rows') WITH ORDINALITY AS u
     WHERE t.e->'rows' IS NOT NULL
     ORDER BY t.n, u.ordinality;
END $$
"""

# -- the bodies 0006 made, restored by downgrade ---------------------------------------------

_MOVE_0006 = f"""
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

SETTLE_0006 = f"""
CREATE OR REPLACE FUNCTION {_SIGNATURE}
LANGUAGE plpgsql AS $$
DECLARE
    i integer;
    s bigint;
    w boolean;
BEGIN
    o_crossed := '{{}}';
    o_crossed_spent := '{{}}';
    UPDATE reservations SET state = p_state, settled_micros = p_spent
     WHERE request_id = p_request_id AND state = 'open';
    IF FOUND THEN  -- else settled or reconciled already: its counters moved then{_MOVE_0006}
    END IF;
    IF p_rows IS NOT NULL THEN
        INSERT INTO usage_events ({_COLUMNS})
        SELECT {_COLUMNS} FROM json_populate_recordset(NULL::usage_events, p_rows);
    END IF;
END $$
"""

SETTLE_MANY_0006 = f"""
CREATE OR REPLACE FUNCTION llmgw_settle_many(p_batch json)
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
    SELECT {_U_COLUMNS}
      FROM json_array_elements(p_batch) WITH ORDINALITY AS t(e, n),
           json_populate_recordset(NULL::usage_events, t.e->'rows') WITH ORDINALITY AS u
     WHERE t.e->'rows' IS NOT NULL
     ORDER BY t.n, u.ordinality;
END $$
"""


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(TAKE_BACK)
    op.execute(DROP_RECONCILED)
    op.execute(SETTLE)
    op.execute(SETTLE_MANY)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(SETTLE_MANY_0006)
    op.execute(SETTLE_0006)
    op.execute("DROP FUNCTION llmgw_drop_reconciled(text[])")
    op.execute("DROP FUNCTION llmgw_take_back(text, text, bigint)")
