-- llmgw_reserve_many, version 2: installed by migration 0006.
CREATE OR REPLACE FUNCTION llmgw_reserve_many(p_batch json)
RETURNS TABLE (o_index integer, o_refused integer, o_spent bigint, o_reserved bigint)
LANGUAGE plpgsql AS $$
DECLARE
    r record;
    x record;
BEGIN
    PERFORM llmgw_make_batch_counters(p_batch);
    FOR r IN SELECT t.e, t.n FROM json_array_elements(p_batch) WITH ORDINALITY AS t(e, n)
             ORDER BY t.n LOOP
        SELECT * INTO x FROM llmgw_reserve(
            r.e->>'request_id', (r.e->>'created_at')::timestamp, (r.e->>'amount')::bigint,
            r.e->>'agent_id', r.e->>'agent_type', r.e->>'project_id', r.e->>'model_group',
            r.e->'counters',
        ARRAY(SELECT k->>0 FROM json_array_elements(r.e->'counters') WITH ORDINALITY x(k, n) ORDER BY n),
        ARRAY(SELECT k->>1 FROM json_array_elements(r.e->'counters') WITH ORDINALITY x(k, n) ORDER BY n),
        ARRAY(SELECT k->>2 FROM json_array_elements(r.e->'counters') WITH ORDINALITY x(k, n) ORDER BY n),
        ARRAY(SELECT (k->>3)::timestamp FROM json_array_elements(r.e->'counters')
                     WITH ORDINALITY x(k, n) ORDER BY n),
        ARRAY(SELECT a::bigint FROM json_array_elements_text(r.e->'amounts')
                     WITH ORDINALITY x(a, n) ORDER BY n));
        o_index := r.n;
        o_refused := x.o_refused;
        o_spent := x.o_spent;
        o_reserved := x.o_reserved;
        RETURN NEXT;
    END LOOP;
END $$
