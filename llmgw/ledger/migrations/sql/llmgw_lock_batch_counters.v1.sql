-- llmgw_lock_batch_counters, version 1: installed by migration 0005.
CREATE OR REPLACE FUNCTION llmgw_lock_batch_counters(p_batch json) RETURNS void
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
