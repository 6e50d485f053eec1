-- llmgw_take_back, version 1: installed by migration 0008.
CREATE OR REPLACE FUNCTION llmgw_take_back(p_request_id text, p_state text, p_spent bigint)
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
