-- llmgw_settle_many, version 1: installed by migration 0006.
CREATE OR REPLACE FUNCTION llmgw_settle_many(p_batch json)
RETURNS TABLE (o_index integer, o_crossed integer[], o_crossed_spent bigint[])
LANGUAGE plpgsql AS $$
-- Each element: {request_id, state, spent, amount, counters, amounts (the warn thresholds),
-- rows (absent: none)}; one result row each, 1-based index, as `llmgw_settle` answers.
DECLARE
    r record;
    k record;
    open_ones integer[] := '{}';
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
        o_crossed := '{}';
        o_crossed_spent := '{}';
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
    INSERT INTO usage_events (request_id, attempt, ts, agent_id, agent_type, project_id,
        model_group, deployment_id, provider, model, status, error_class, error_message,
        prompt_tokens, completion_tokens, cached_tokens, cost_micros, saved_micros,
        latency_ms, stream, metadata)
    SELECT u.request_id, u.attempt, u.ts, u.agent_id, u.agent_type, u.project_id,
        u.model_group, u.deployment_id, u.provider, u.model, u.status, u.error_class,
        u.error_message, u.prompt_tokens, u.completion_tokens, u.cached_tokens,
        u.cost_micros, u.saved_micros, u.latency_ms, u.stream, u.metadata
      FROM json_array_elements(p_batch) WITH ORDINALITY AS t(e, n),
           json_populate_recordset(NULL::usage_events, t.e->'rows') WITH ORDINALITY AS u
     WHERE t.e->'rows' IS NOT NULL
     ORDER BY t.n, u.ordinality;
END $$
