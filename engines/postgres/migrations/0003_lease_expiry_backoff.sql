-- qrun postgres engine, schema version 3: an expired lease waits the retry delay.
-- __Q__ is replaced by the quoted schema name, and __CHANNEL__ by the notification channel, before this runs.
--
-- Versions 1 and 2 made a message whose lease expired (its holder died or
-- hung) ready again at once, so a message that kills its consumer came back
-- in a hot loop, burning an attempt per visibility timeout. The runtime
-- computes the retry delay of every failure it sees itself and passes it
-- with a nack; an expired lease is the failure only the reaper sees, so the
-- queue's retry policy is now stored with the queue (every Open with
-- settings writes it, so every qrun process opening the queue with the same
-- config writes the same values) and reap applies it.

ALTER TABLE __Q__.queues
    ADD COLUMN retry_initial_us bigint NOT NULL DEFAULT 0 CHECK (retry_initial_us >= 0),
    ADD COLUMN retry_max_us     bigint NOT NULL DEFAULT 0 CHECK (retry_max_us >= 0),
    -- Finite only ('Infinity' and NaN compare above every finite value), so
    -- backoff() can never raise inside reap, which serves every queue.
    ADD COLUMN retry_multiplier double precision NOT NULL DEFAULT 1
        CHECK (retry_multiplier > '-Infinity' AND retry_multiplier < 'Infinity'),
    ADD COLUMN retry_jitter     double precision NOT NULL DEFAULT 0
        CHECK (retry_jitter > '-Infinity' AND retry_jitter < 'Infinity');

-- backoff is engines.RetryPolicy.Delay in microseconds: the wait before the
-- attempt that follows p_failures earlier failures (0 for the first),
-- retry_initial_us * retry_multiplier^p_failures, capped at retry_max_us
-- (when set), then spread by ±retry_jitter with random() and capped again.
-- The exponent is compared in logarithms, so a long failure streak cannot
-- overflow; the result never exceeds 100 years, where the engine's
-- durations stop meaning a time (a timestamp must still hold now() + it).
CREATE FUNCTION __Q__.backoff(q __Q__.queues, p_failures integer) RETURNS bigint
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    cap double precision := 3153600000000000; -- 100 years in microseconds
    e double precision;
    d double precision;
BEGIN
    IF q.retry_initial_us <= 0 THEN
        RETURN 0;
    END IF;
    IF q.retry_max_us > 0 THEN
        cap := least(cap, q.retry_max_us);
    END IF;
    e := ln(q.retry_initial_us::double precision) + greatest(p_failures, 0) * ln(greatest(q.retry_multiplier, 1));
    IF e >= ln(cap) THEN
        d := cap;
    ELSE
        d := exp(e);
    END IF;
    IF q.retry_jitter > 0 THEN
        d := d * (1 + q.retry_jitter * (2 * random() - 1));
    END IF;
    RETURN greatest(0, least(d, cap))::bigint;
END
$$;

-- reap as in version 2, except that an expired lease below max_attempts
-- waits backoff(failures before it) as a delayed message (state 1), as a
-- nack with that delay would, instead of becoming ready at once.
CREATE OR REPLACE FUNCTION __Q__.reap(p_limit integer) RETURNS TABLE (queue_id integer, due_in_us bigint)
LANGUAGE plpgsql AS $$
DECLARE
    q __Q__.queues;
    r record;
    n bigint;
    nexp bigint;
    dlq integer;
    wait_us bigint;
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
                woke := woke || q.id;
            ELSE
                wait_us := __Q__.backoff(q, r.failures);
                UPDATE __Q__.messages SET failures = failures + 1, lease_token = NULL,
                    state = CASE WHEN wait_us = 0 THEN 0 ELSE 1 END, visible_at = __Q__.after(wait_us)
                 WHERE seq = r.seq;
                IF wait_us = 0 THEN
                    woke := woke || q.id;
                END IF;
            END IF;
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
