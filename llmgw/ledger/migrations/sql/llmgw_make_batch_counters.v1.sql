-- llmgw_make_batch_counters, version 1: installed by migration 0006.
CREATE OR REPLACE FUNCTION llmgw_make_batch_counters(p_batch json) RETURNS void
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
