-- llmgw_settle, version 2: installed by migration 0006.
CREATE OR REPLACE FUNCTION llmgw_settle(
    p_request_id text, p_state text, p_spent bigint, p_amount bigint,
    p_scopes text[], p_scope_ids text[], p_periods text[], p_starts timestamp[],
    p_thresholds bigint[], p_rows json,
    OUT o_crossed integer[], OUT o_crossed_spent bigint[])
LANGUAGE plpgsql AS $$
DECLARE
    i integer;
    s bigint;
    w boolean;
BEGIN
    o_crossed := '{}';
    o_crossed_spent := '{}';
    UPDATE reservations SET state = p_state, settled_micros = p_spent
     WHERE request_id = p_request_id AND state = 'open';
    IF FOUND THEN  -- else settled or reconciled already: its counters moved then
    FOR i IN 1 .. cardinality(p_scopes) LOOP
        UPDATE budget_counters c SET reserved_micros = c.reserved_micros - p_amount,
                                     spent_micros = c.spent_micros + p_spent
         WHERE c.scope = p_scopes[i] AND c.scope_id = p_scope_ids[i] AND c.period =
             p_periods[i] AND c.period_start = p_starts[i]
        RETURNING c.spent_micros, c.warned INTO s, w;
        -- We hold the row's lock: no other process can mark it before we commit.
        IF p_spent > 0 AND NOT w AND s >= p_thresholds[i] THEN
            UPDATE budget_counters c SET warned = TRUE WHERE c.scope = p_scopes[i]
                AND c.scope_id = p_scope_ids[i] AND c.period = p_periods[i] AND
                c.period_start = p_starts[i];
            o_crossed := o_crossed || i;
            o_crossed_spent := o_crossed_spent || s;
        END IF;
    END LOOP;
    END IF;
    IF p_rows IS NOT NULL THEN
        INSERT INTO usage_events (request_id, attempt, ts, agent_id, agent_type,
            project_id, model_group, deployment_id, provider, model, status,
            error_class, error_message, prompt_tokens, completion_tokens, cached_tokens,
            cost_micros, saved_micros, latency_ms, stream, metadata)
        SELECT request_id, attempt, ts, agent_id, agent_type, project_id, model_group,
            deployment_id, provider, model, status, error_class, error_message,
            prompt_tokens, completion_tokens, cached_tokens, cost_micros, saved_micros,
            latency_ms, stream, metadata FROM
            json_populate_recordset(NULL::usage_events, p_rows);
    END IF;
END $$
