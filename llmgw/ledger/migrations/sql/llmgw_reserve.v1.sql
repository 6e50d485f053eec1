-- llmgw_reserve, version 1: installed by migration 0004.
CREATE OR REPLACE FUNCTION llmgw_reserve(
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
          FROM budget_counters c WHERE c.scope = p_scopes[i] AND c.scope_id =
              p_scope_ids[i] AND c.period = p_periods[i] AND c.period_start =
              p_starts[i] FOR UPDATE;
        IF NOT FOUND THEN
            INSERT INTO budget_counters (scope, scope_id, period, period_start, spent_micros,
                                         reserved_micros, warned)
            VALUES (p_scopes[i], p_scope_ids[i], p_periods[i], p_starts[i], 0, 0, FALSE)
            ON CONFLICT DO NOTHING;
            SELECT c.spent_micros, c.reserved_micros INTO o_spent, o_reserved
              FROM budget_counters c WHERE c.scope = p_scopes[i] AND c.scope_id =
                  p_scope_ids[i] AND c.period = p_periods[i] AND c.period_start =
                  p_starts[i] FOR UPDATE;
        END IF;
        IF o_spent + o_reserved + p_amount > p_limits[i] THEN
            o_refused := i;
            RETURN;
        END IF;
    END LOOP;
    FOR i IN 1 .. cardinality(p_scopes) LOOP  -- every row is locked by us already
        UPDATE budget_counters c SET reserved_micros = c.reserved_micros + p_amount
         WHERE c.scope = p_scopes[i] AND c.scope_id = p_scope_ids[i] AND c.period =
             p_periods[i] AND c.period_start = p_starts[i];
    END LOOP;
    INSERT INTO reservations (request_id, created_at, state, amount_micros, agent_id,
                              agent_type, project_id, model_group, counters)
    VALUES (p_request_id, p_created_at, 'open', p_amount, p_agent_id, p_agent_type,
            p_project_id, p_model_group, p_counters);
    o_spent := NULL;
    o_reserved := NULL;
END $$
