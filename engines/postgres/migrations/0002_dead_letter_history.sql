-- qrun postgres engine, schema version 2: a dead letter keeps its history.
-- __Q__ is replaced by the quoted schema name, and __CHANNEL__ by the notification channel, before this runs.
--
-- Version 1 reset attempt and failures when it moved a message to its
-- dead-letter queue, so `qrun dlq show` and peek said "failures 0" for a
-- message nacked three times. Now move_dead keeps both, and the two
-- callers that dead-letter on a failure (a nack at max_attempts in settle,
-- a lease expiry at max_attempts in reap) count that failure first, so the
-- dead letter's failures include the one that sent it there. Redrive still
-- starts a message again at attempt 1 with no failures.

CREATE OR REPLACE FUNCTION __Q__.move_dead(p_seq bigint, q __Q__.queues, p_reason text) RETURNS integer
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE __Q__.messages SET
        queue_id = q.dead_letter_id, state = 0, visible_at = now(), expires_at = NULL,
        lease_token = NULL,
        attributes = coalesce(attributes, '{}'::jsonb)
            || jsonb_build_object('qrun.dead_letter.reason', p_reason, 'qrun.dead_letter.source', q.name)
    WHERE seq = p_seq;
    PERFORM __Q__.count_add(q.dead_letter_id, p_enqueued => 1);
    RETURN q.dead_letter_id;
END
$$;

CREATE OR REPLACE FUNCTION __Q__.settle(p_seq bigint, p_token bigint, p_verdict integer, p_delay_us bigint, p_reason text)
RETURNS integer[]
LANGUAGE plpgsql AS $$
DECLARE
    m record;
    q __Q__.queues;
    dlq integer;
BEGIN
    SELECT seq, queue_id, failures INTO m FROM __Q__.messages
     WHERE seq = p_seq AND lease_token = p_token AND state = 2 AND visible_at > now()
       FOR UPDATE;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    SELECT * INTO q FROM __Q__.queues WHERE id = m.queue_id;
    IF p_verdict = 1 THEN
        PERFORM __Q__.count_add(q.id, p_nacked => 1);
        IF q.max_attempts > 0 AND m.failures + 1 >= q.max_attempts THEN
            UPDATE __Q__.messages SET failures = failures + 1 WHERE seq = p_seq;
            dlq := __Q__.dead_letter(p_seq, q.id, format('max attempts (%s) reached: %s', q.max_attempts, p_reason));
            RETURN array_remove(ARRAY[dlq, q.id], NULL);
        END IF;
        UPDATE __Q__.messages SET failures = failures + 1, lease_token = NULL,
            state = CASE WHEN p_delay_us = 0 THEN 0 ELSE 1 END, visible_at = __Q__.after(p_delay_us)
         WHERE seq = p_seq;
        RETURN ARRAY[q.id];
    ELSIF p_verdict = 2 THEN
        UPDATE __Q__.messages SET lease_token = NULL,
            state = CASE WHEN p_delay_us = 0 THEN 0 ELSE 1 END, visible_at = __Q__.after(p_delay_us)
         WHERE seq = p_seq;
        RETURN ARRAY[q.id];
    ELSIF p_verdict = 3 THEN
        dlq := __Q__.dead_letter(p_seq, q.id, coalesce(nullif(p_reason, ''), 'dead-lettered by consumer'));
        RETURN array_remove(ARRAY[dlq, q.id], NULL);
    END IF;
    RAISE EXCEPTION 'qrun: unknown verdict %', p_verdict USING ERRCODE = '22023';
END
$$;

CREATE OR REPLACE FUNCTION __Q__.reap(p_limit integer) RETURNS TABLE (queue_id integer, due_in_us bigint)
LANGUAGE plpgsql AS $$
DECLARE
    q __Q__.queues;
    r record;
    n bigint;
    nexp bigint;
    dlq integer;
    woke integer[] := '{}';
    v_next timestamptz;
    t timestamptz;
BEGIN
    FOR q IN SELECT * FROM __Q__.queues WHERE kind = 'queue' LOOP
        WITH due AS (
            SELECT m.seq FROM __Q__.messages m
             WHERE m.queue_id = q.id AND m.state = 1 AND m.visible_at <= now()
             ORDER BY m.visible_at LIMIT p_limit
               FOR UPDATE SKIP LOCKED
        )
        UPDATE __Q__.messages m SET state = 0 FROM due WHERE m.seq = due.seq;
        GET DIAGNOSTICS n = ROW_COUNT;
        IF n > 0 THEN
            woke := woke || q.id;
        END IF;
        nexp := 0;
        FOR r IN
            SELECT m.seq, m.failures FROM __Q__.messages m
             WHERE m.queue_id = q.id AND m.state = 2 AND m.visible_at <= now()
             ORDER BY m.visible_at LIMIT p_limit
               FOR UPDATE SKIP LOCKED
        LOOP
            nexp := nexp + 1;
            IF q.max_attempts > 0 AND r.failures + 1 >= q.max_attempts THEN
                UPDATE __Q__.messages SET failures = failures + 1 WHERE seq = r.seq;
                dlq := __Q__.dead_letter(r.seq, q.id, format('max attempts (%s) reached: lease expired', q.max_attempts));
                IF dlq IS NOT NULL THEN
                    woke := woke || dlq;
                END IF;
            ELSE
                UPDATE __Q__.messages SET state = 0, failures = failures + 1, lease_token = NULL, visible_at = now()
                 WHERE seq = r.seq;
            END IF;
            woke := woke || q.id;
        END LOOP;
        IF nexp > 0 THEN
            PERFORM __Q__.count_add(q.id, p_expired_lease => nexp);
        END IF;
        SELECT m.visible_at INTO t FROM __Q__.messages m
         WHERE m.queue_id = q.id AND m.state IN (1, 2) ORDER BY m.visible_at LIMIT 1;
        IF t IS NOT NULL AND (v_next IS NULL OR t < v_next) THEN
            v_next := t;
        END IF;
    END LOOP;
    RETURN QUERY SELECT DISTINCT w, NULL::bigint FROM unnest(woke) AS w;
    RETURN QUERY SELECT NULL::integer,
        CASE WHEN v_next IS NULL OR v_next = 'infinity' THEN -1::bigint
             ELSE greatest(0, (extract(epoch FROM v_next - now()) * 1000000)::bigint) END;
END
$$;
