-- llmgw_drop_reconciled, version 1: installed by migration 0008.
CREATE OR REPLACE FUNCTION llmgw_drop_reconciled(p_request_ids text[]) RETURNS void
LANGUAGE plpgsql AS $$
-- Delete these requests' `Reconciled` rows and take them out of the rollup, its rows
-- updated in the trigger's key order (a reconciled row has no deployment: its key sorts
-- before its request's own rows of the same day and group, which the insert adds next).
-- Each row's measures and request credits are what the rollup trigger added for it.
DECLARE
    g record;
BEGIN
    FOR g IN
        SELECT n.project_id, n.agent_id, CAST(n.ts AS DATE) AS day,
               COALESCE(n.agent_type, '') AS agent_type, n.model_group,
               COALESCE(n.deployment_id, '') AS deployment_id,
               COALESCE(n.provider, '') AS provider, COALESCE(n.model, '') AS model,
               CASE WHEN n.agent_type IS NULL THEN 1 ELSE 0 END
               + CASE WHEN n.deployment_id IS NULL THEN 2 ELSE 0 END
               + CASE WHEN n.provider IS NULL THEN 4 ELSE 0 END
               + CASE WHEN n.model IS NULL THEN 8 ELSE 0 END AS null_keys,
               SUM(CASE WHEN n.status IN ('ok', 'error', 'partial') THEN 1 ELSE 0 END) AS attempts,
               SUM(CASE WHEN n.status = 'error' THEN 1 ELSE 0 END) AS errors,
               SUM(CASE WHEN n.status = 'cached' THEN 1 ELSE 0 END) AS cached,
               SUM(CASE WHEN n.status = 'refused' THEN 1 ELSE 0 END) AS refused,
               SUM(n.prompt_tokens) AS prompt_tokens,
               SUM(n.completion_tokens) AS completion_tokens,
               SUM(n.cost_micros) AS cost_micros, SUM(n.saved_micros) AS saved_micros,
               SUM(CASE WHEN NOT EXISTS (SELECT 1 FROM usage_events e WHERE
                   e.request_id = n.request_id AND e.id < n.id)
                   THEN 1 ELSE 0 END) AS req_first,
               SUM(CASE WHEN NOT EXISTS (SELECT 1 FROM usage_events e WHERE
                   e.request_id = n.request_id AND e.id < n.id
                   AND e.agent_type IS NOT DISTINCT FROM n.agent_type)
                   THEN 1 ELSE 0 END) AS req_agent_type,
               SUM(CASE WHEN NOT EXISTS (SELECT 1 FROM usage_events e WHERE
                   e.request_id = n.request_id AND e.id < n.id
                   AND e.model_group IS NOT DISTINCT FROM n.model_group)
                   THEN 1 ELSE 0 END) AS req_model_group,
               SUM(CASE WHEN NOT EXISTS (SELECT 1 FROM usage_events e WHERE
                   e.request_id = n.request_id AND e.id < n.id
                   AND e.deployment_id IS NOT DISTINCT FROM n.deployment_id)
                   THEN 1 ELSE 0 END) AS req_deployment,
               SUM(CASE WHEN NOT EXISTS (SELECT 1 FROM usage_events e WHERE
                   e.request_id = n.request_id AND e.id < n.id
                   AND e.provider IS NOT DISTINCT FROM n.provider)
                   THEN 1 ELSE 0 END) AS req_provider,
               SUM(CASE WHEN NOT EXISTS (SELECT 1 FROM usage_events e WHERE
                   e.request_id = n.request_id AND e.id < n.id
                   AND e.model IS NOT DISTINCT FROM n.model)
                   THEN 1 ELSE 0 END) AS req_model
          FROM usage_events n
         WHERE n.request_id = ANY(p_request_ids) AND n.status = 'error'
           AND n.error_class = 'Reconciled'
         GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9 ORDER BY 1, 2, 3, 4, 5, 6, 7, 8, 9
    LOOP
        UPDATE usage_rollup u
           SET attempts = u.attempts - g.attempts, errors = u.errors - g.errors,
               cached = u.cached - g.cached, refused = u.refused - g.refused,
               prompt_tokens = u.prompt_tokens - g.prompt_tokens,
               completion_tokens = u.completion_tokens - g.completion_tokens,
               cost_micros = u.cost_micros - g.cost_micros,
               saved_micros = u.saved_micros - g.saved_micros,
               req_first = u.req_first - g.req_first,
               req_agent_type = u.req_agent_type - g.req_agent_type,
               req_model_group = u.req_model_group - g.req_model_group,
               req_deployment = u.req_deployment - g.req_deployment,
               req_provider = u.req_provider - g.req_provider,
               req_model = u.req_model - g.req_model
         WHERE u.project_id = g.project_id AND u.agent_id = g.agent_id AND u.day = g.day
           AND u.agent_type = g.agent_type AND u.model_group = g.model_group
           AND u.deployment_id = g.deployment_id AND u.provider = g.provider
           AND u.model = g.model AND u.null_keys = g.null_keys;
    END LOOP;
    DELETE FROM usage_events
     WHERE request_id = ANY(p_request_ids) AND status = 'error'
       AND error_class = 'Reconciled';
END $$
