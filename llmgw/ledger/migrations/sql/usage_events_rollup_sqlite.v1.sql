-- usage_events_rollup on SQLite, version 1 (the baseline; before it 0003, rebuilt by 0015):
-- a row trigger. PostgreSQL's statement trigger runs usage_events_rollup.v<N>.sql instead.
-- Per new row: list its request if its rows differ in day, project or agent, then add it to
-- its rollup row. Request credits look at the request's earlier rows (one index seek): 1 for
-- the request's first row, or its first row with that column's value. NULL keys are stored
-- as '' with a bit in null_keys (1 agent_type, 2 deployment_id, 4 provider, 8 model).
CREATE TRIGGER usage_events_rollup AFTER INSERT ON usage_events BEGIN
    INSERT INTO usage_split_requests (request_id)
    SELECT NEW.request_id WHERE EXISTS (
        SELECT 1 FROM usage_events e
         WHERE e.request_id = NEW.request_id AND e.id <> NEW.id
           AND (date(e.ts) <> date(NEW.ts) OR e.project_id <> NEW.project_id
                OR e.agent_id <> NEW.agent_id))
    ON CONFLICT (request_id) DO NOTHING;
    INSERT INTO usage_rollup (project_id, agent_id, day, agent_type, model_group,
                              deployment_id, provider, model, null_keys,
                              attempts, errors, cached, refused, prompt_tokens,
                              completion_tokens, cost_micros, saved_micros,
                              req_first, req_agent_type, req_model_group, req_deployment,
                              req_provider, req_model,
                              cache_read_tokens, cache_write_tokens, cache_write_1h_tokens,
                              reasoning_tokens)
    SELECT NEW.project_id, NEW.agent_id, date(NEW.ts), COALESCE(NEW.agent_type, ''),
           NEW.model_group, COALESCE(NEW.deployment_id, ''), COALESCE(NEW.provider, ''),
           COALESCE(NEW.model, ''),
           (NEW.agent_type IS NULL) * 1 + (NEW.deployment_id IS NULL) * 2
               + (NEW.provider IS NULL) * 4 + (NEW.model IS NULL) * 8,
           NEW.status IN ('ok', 'error', 'partial'), NEW.status = 'error',
           NEW.status = 'cached', NEW.status = 'refused', NEW.prompt_tokens,
           NEW.completion_tokens, NEW.cost_micros, NEW.saved_micros,
           COALESCE(p.req_first, 0) = 0, COALESCE(p.req_agent_type, 0) = 0,
           COALESCE(p.req_model_group, 0) = 0, COALESCE(p.req_deployment, 0) = 0,
           COALESCE(p.req_provider, 0) = 0, COALESCE(p.req_model, 0) = 0,
           NEW.cache_read_tokens, NEW.cache_write_tokens, NEW.cache_write_1h_tokens,
           NEW.reasoning_tokens
      FROM (SELECT COUNT(*) AS req_first, SUM(e.agent_type IS NEW.agent_type) AS req_agent_type,
                   SUM(e.model_group IS NEW.model_group) AS req_model_group,
                   SUM(e.deployment_id IS NEW.deployment_id) AS req_deployment,
                   SUM(e.provider IS NEW.provider) AS req_provider,
                   SUM(e.model IS NEW.model) AS req_model
              FROM usage_events e
             WHERE e.request_id = NEW.request_id AND e.id < NEW.id) p
     WHERE true
    ON CONFLICT (project_id, agent_id, day, agent_type, model_group, deployment_id, provider,
                 model, null_keys) DO UPDATE SET
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
END
