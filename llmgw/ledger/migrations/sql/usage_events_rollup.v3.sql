-- usage_events_rollup, version 3 (migration 0015): version 2, and the rollup keeps the sums
-- of every token kind: cache reads, cache writes (and their 1-hour part), reasoning tokens.
-- Same statements, same plans, same lock order as v2 (see its file for why it is built so).
CREATE OR REPLACE FUNCTION usage_events_rollup() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    bulk boolean;
BEGIN
    SELECT count(*) > 64 INTO bulk FROM (SELECT 1 FROM new_rows LIMIT 65) AS first_rows;
    IF bulk THEN
        EXECUTE $split$
            INSERT INTO usage_split_requests (request_id)
            SELECT e.request_id
              FROM usage_events e
             WHERE e.request_id IN (SELECT n.request_id FROM new_rows n)
             GROUP BY e.request_id
            HAVING min(CAST(e.ts AS DATE)) <> max(CAST(e.ts AS DATE))
                OR min(e.project_id) <> max(e.project_id)
                OR min(e.agent_id) <> max(e.agent_id)
             ORDER BY e.request_id
            ON CONFLICT (request_id) DO NOTHING
        $split$;
        EXECUTE $rollup$
            WITH batch AS (
                -- The new rows twice (flagged, and again among their requests' rows): a
                -- duplicate changes no min(id), and only the flagged copy is added up.
                SELECT TRUE AS is_new, n.id, n.request_id, n.ts, n.project_id, n.agent_id,
                       n.agent_type, n.model_group, n.deployment_id, n.provider, n.model,
                       n.status, n.prompt_tokens, n.completion_tokens, n.cost_micros,
                       n.saved_micros, n.cache_read_tokens, n.cache_write_tokens,
                       n.cache_write_1h_tokens, n.reasoning_tokens
                  FROM new_rows n
                UNION ALL
                SELECT FALSE, e.id, e.request_id, e.ts, e.project_id, e.agent_id,
                       e.agent_type, e.model_group, e.deployment_id, e.provider, e.model,
                       e.status, e.prompt_tokens, e.completion_tokens, e.cost_micros,
                       e.saved_micros, e.cache_read_tokens, e.cache_write_tokens,
                       e.cache_write_1h_tokens, e.reasoning_tokens
                  FROM usage_events e
                 WHERE e.request_id IN (SELECT n.request_id FROM new_rows n)
            ), credited AS (
                -- PARTITION BY puts NULLs together: v1's IS NOT DISTINCT FROM.
                SELECT b.*,
                       b.id = min(b.id) OVER (PARTITION BY b.request_id) AS c_first,
                       b.id = min(b.id) OVER (PARTITION BY b.request_id, b.agent_type)
                           AS c_agent_type,
                       b.id = min(b.id) OVER (PARTITION BY b.request_id, b.model_group)
                           AS c_model_group,
                       b.id = min(b.id) OVER (PARTITION BY b.request_id, b.deployment_id)
                           AS c_deployment,
                       b.id = min(b.id) OVER (PARTITION BY b.request_id, b.provider)
                           AS c_provider,
                       b.id = min(b.id) OVER (PARTITION BY b.request_id, b.model) AS c_model
                  FROM batch b
            )
            INSERT INTO usage_rollup (
                project_id, agent_id, day, agent_type, model_group, deployment_id, provider,
                model, null_keys, attempts, errors, cached, refused, prompt_tokens,
                completion_tokens, cost_micros, saved_micros, req_first, req_agent_type,
                req_model_group, req_deployment, req_provider, req_model, cache_read_tokens,
                cache_write_tokens, cache_write_1h_tokens, reasoning_tokens)
            SELECT c.project_id, c.agent_id, CAST(c.ts AS DATE), COALESCE(c.agent_type, ''),
                   c.model_group, COALESCE(c.deployment_id, ''), COALESCE(c.provider, ''),
                   COALESCE(c.model, ''),
                   CASE WHEN c.agent_type IS NULL THEN 1 ELSE 0 END
                   + CASE WHEN c.deployment_id IS NULL THEN 2 ELSE 0 END
                   + CASE WHEN c.provider IS NULL THEN 4 ELSE 0 END
                   + CASE WHEN c.model IS NULL THEN 8 ELSE 0 END,
                   SUM(CASE WHEN c.status IN ('ok', 'error', 'partial') THEN 1 ELSE 0 END),
                   SUM(CASE WHEN c.status = 'error' THEN 1 ELSE 0 END),
                   SUM(CASE WHEN c.status = 'cached' THEN 1 ELSE 0 END),
                   SUM(CASE WHEN c.status = 'refused' THEN 1 ELSE 0 END),
                   SUM(c.prompt_tokens), SUM(c.completion_tokens), SUM(c.cost_micros),
                   SUM(c.saved_micros),
                   SUM(CASE WHEN c.c_first THEN 1 ELSE 0 END),
                   SUM(CASE WHEN c.c_agent_type THEN 1 ELSE 0 END),
                   SUM(CASE WHEN c.c_model_group THEN 1 ELSE 0 END),
                   SUM(CASE WHEN c.c_deployment THEN 1 ELSE 0 END),
                   SUM(CASE WHEN c.c_provider THEN 1 ELSE 0 END),
                   SUM(CASE WHEN c.c_model THEN 1 ELSE 0 END),
                   SUM(c.cache_read_tokens), SUM(c.cache_write_tokens),
                   SUM(c.cache_write_1h_tokens), SUM(c.reasoning_tokens)
              FROM credited c
             WHERE c.is_new
             GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9
             ORDER BY 1, 2, 3, 4, 5, 6, 7, 8, 9
            ON CONFLICT (project_id, agent_id, day, agent_type, model_group, deployment_id,
                         provider, model, null_keys) DO UPDATE SET
                attempts = usage_rollup.attempts + excluded.attempts,
                errors = usage_rollup.errors + excluded.errors,
                cached = usage_rollup.cached + excluded.cached,
                refused = usage_rollup.refused + excluded.refused,
                prompt_tokens = usage_rollup.prompt_tokens + excluded.prompt_tokens,
                completion_tokens = usage_rollup.completion_tokens + excluded.completion_tokens,
                cost_micros = usage_rollup.cost_micros + excluded.cost_micros,
                saved_micros = usage_rollup.saved_micros + excluded.saved_micros,
                req_first = usage_rollup.req_first + excluded.req_first,
                req_agent_type = usage_rollup.req_agent_type + excluded.req_agent_type,
                req_model_group = usage_rollup.req_model_group + excluded.req_model_group,
                req_deployment = usage_rollup.req_deployment + excluded.req_deployment,
                req_provider = usage_rollup.req_provider + excluded.req_provider,
                req_model = usage_rollup.req_model + excluded.req_model,
                cache_read_tokens = usage_rollup.cache_read_tokens + excluded.cache_read_tokens,
                cache_write_tokens = usage_rollup.cache_write_tokens + excluded.cache_write_tokens,
                cache_write_1h_tokens = usage_rollup.cache_write_1h_tokens + excluded.cache_write_1h_tokens,
                reasoning_tokens = usage_rollup.reasoning_tokens + excluded.reasoning_tokens
        $rollup$;
    ELSE
        INSERT INTO usage_split_requests (request_id)
        SELECT e.request_id
          FROM usage_events e
         WHERE e.request_id IN (SELECT n.request_id FROM new_rows n)
         GROUP BY e.request_id
        HAVING min(CAST(e.ts AS DATE)) <> max(CAST(e.ts AS DATE))
            OR min(e.project_id) <> max(e.project_id)
            OR min(e.agent_id) <> max(e.agent_id)
         ORDER BY e.request_id
        ON CONFLICT (request_id) DO NOTHING;
        WITH batch AS (
            -- The new rows twice (flagged, and again among their requests' rows): a
            -- duplicate changes no min(id), and only the flagged copy is added up.
            SELECT TRUE AS is_new, n.id, n.request_id, n.ts, n.project_id, n.agent_id,
                   n.agent_type, n.model_group, n.deployment_id, n.provider, n.model,
                   n.status, n.prompt_tokens, n.completion_tokens, n.cost_micros,
                   n.saved_micros, n.cache_read_tokens, n.cache_write_tokens,
                   n.cache_write_1h_tokens, n.reasoning_tokens
              FROM new_rows n
            UNION ALL
            SELECT FALSE, e.id, e.request_id, e.ts, e.project_id, e.agent_id,
                   e.agent_type, e.model_group, e.deployment_id, e.provider, e.model,
                   e.status, e.prompt_tokens, e.completion_tokens, e.cost_micros,
                   e.saved_micros, e.cache_read_tokens, e.cache_write_tokens,
                   e.cache_write_1h_tokens, e.reasoning_tokens
              FROM usage_events e
             WHERE e.request_id IN (SELECT n.request_id FROM new_rows n)
        ), credited AS (
            -- PARTITION BY puts NULLs together: v1's IS NOT DISTINCT FROM.
            SELECT b.*,
                   b.id = min(b.id) OVER (PARTITION BY b.request_id) AS c_first,
                   b.id = min(b.id) OVER (PARTITION BY b.request_id, b.agent_type)
                       AS c_agent_type,
                   b.id = min(b.id) OVER (PARTITION BY b.request_id, b.model_group)
                       AS c_model_group,
                   b.id = min(b.id) OVER (PARTITION BY b.request_id, b.deployment_id)
                       AS c_deployment,
                   b.id = min(b.id) OVER (PARTITION BY b.request_id, b.provider)
                       AS c_provider,
                   b.id = min(b.id) OVER (PARTITION BY b.request_id, b.model) AS c_model
              FROM batch b
        )
        INSERT INTO usage_rollup (
            project_id, agent_id, day, agent_type, model_group, deployment_id, provider,
            model, null_keys, attempts, errors, cached, refused, prompt_tokens,
            completion_tokens, cost_micros, saved_micros, req_first, req_agent_type,
            req_model_group, req_deployment, req_provider, req_model, cache_read_tokens,
            cache_write_tokens, cache_write_1h_tokens, reasoning_tokens)
        SELECT c.project_id, c.agent_id, CAST(c.ts AS DATE), COALESCE(c.agent_type, ''),
               c.model_group, COALESCE(c.deployment_id, ''), COALESCE(c.provider, ''),
               COALESCE(c.model, ''),
               CASE WHEN c.agent_type IS NULL THEN 1 ELSE 0 END
               + CASE WHEN c.deployment_id IS NULL THEN 2 ELSE 0 END
               + CASE WHEN c.provider IS NULL THEN 4 ELSE 0 END
               + CASE WHEN c.model IS NULL THEN 8 ELSE 0 END,
               SUM(CASE WHEN c.status IN ('ok', 'error', 'partial') THEN 1 ELSE 0 END),
               SUM(CASE WHEN c.status = 'error' THEN 1 ELSE 0 END),
               SUM(CASE WHEN c.status = 'cached' THEN 1 ELSE 0 END),
               SUM(CASE WHEN c.status = 'refused' THEN 1 ELSE 0 END),
               SUM(c.prompt_tokens), SUM(c.completion_tokens), SUM(c.cost_micros),
               SUM(c.saved_micros),
               SUM(CASE WHEN c.c_first THEN 1 ELSE 0 END),
               SUM(CASE WHEN c.c_agent_type THEN 1 ELSE 0 END),
               SUM(CASE WHEN c.c_model_group THEN 1 ELSE 0 END),
               SUM(CASE WHEN c.c_deployment THEN 1 ELSE 0 END),
               SUM(CASE WHEN c.c_provider THEN 1 ELSE 0 END),
               SUM(CASE WHEN c.c_model THEN 1 ELSE 0 END),
               SUM(c.cache_read_tokens), SUM(c.cache_write_tokens),
               SUM(c.cache_write_1h_tokens), SUM(c.reasoning_tokens)
          FROM credited c
         WHERE c.is_new
         GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9
         ORDER BY 1, 2, 3, 4, 5, 6, 7, 8, 9
        ON CONFLICT (project_id, agent_id, day, agent_type, model_group, deployment_id,
                     provider, model, null_keys) DO UPDATE SET
            attempts = usage_rollup.attempts + excluded.attempts,
            errors = usage_rollup.errors + excluded.errors,
            cached = usage_rollup.cached + excluded.cached,
            refused = usage_rollup.refused + excluded.refused,
            prompt_tokens = usage_rollup.prompt_tokens + excluded.prompt_tokens,
            completion_tokens = usage_rollup.completion_tokens + excluded.completion_tokens,
            cost_micros = usage_rollup.cost_micros + excluded.cost_micros,
            saved_micros = usage_rollup.saved_micros + excluded.saved_micros,
            req_first = usage_rollup.req_first + excluded.req_first,
            req_agent_type = usage_rollup.req_agent_type + excluded.req_agent_type,
            req_model_group = usage_rollup.req_model_group + excluded.req_model_group,
            req_deployment = usage_rollup.req_deployment + excluded.req_deployment,
            req_provider = usage_rollup.req_provider + excluded.req_provider,
            req_model = usage_rollup.req_model + excluded.req_model,
            cache_read_tokens = usage_rollup.cache_read_tokens + excluded.cache_read_tokens,
            cache_write_tokens = usage_rollup.cache_write_tokens + excluded.cache_write_tokens,
            cache_write_1h_tokens = usage_rollup.cache_write_1h_tokens + excluded.cache_write_1h_tokens,
            reasoning_tokens = usage_rollup.reasoning_tokens + excluded.reasoning_tokens;
    END IF;
    RETURN NULL;
END $$
