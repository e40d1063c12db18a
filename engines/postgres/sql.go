package postgres

import "strings"

// statements are the engine's SQL with the schema filled in. pgx prepares
// each one once per connection and reuses it, so these strings are parsed
// and planned once.
type statements struct {
	openName, openSpec                   string
	declareTopic, subscribe, unsubscribe string
	enqueue, enqueueTopic, enqueuePlain  string
	dedupClaim, dedupLookup, dedupSet    string
	countDuplicates                      string
	lockKeys                             string
	lease, expire                        string
	ack, ackOrdered, settle, extend      string
	reap, pruneDedup, heal               string
	stats                                string
	peek, peekPage, purge, redrive       string
	notify                               string
}

// deliveryColumns are the columns a delivery is built from, in scan order.
const deliveryColumns = `seq, coalesce(id, ''), priority, enqueued_at, attempt, failures,
	coalesce(ordering_key, ''), coalesce(content_type, ''), coalesce(correlation_id, ''), attributes, body`

// countInserted ends an enqueue statement whose CTE "ins" inserted rows
// of queue $1: it adds them to the queue's counter shard and returns
// their seqs in order.
const countInserted = `,
			c AS (
				INSERT INTO __Q__.counters AS c (queue_id, shard, enqueued)
				SELECT $1, pg_backend_pid() % 16, count(*) FROM ins
				ON CONFLICT (queue_id, shard) DO UPDATE SET enqueued = c.enqueued + EXCLUDED.enqueued)
			SELECT seq FROM ins ORDER BY seq`

func newStatements(schema string) statements {
	r := strings.NewReplacer("__Q__", schema)
	s := func(q string) string { return r.Replace(q) }
	return statements{
		// The no-op update makes RETURNING report a row that already exists.
		openName: s(`INSERT INTO __Q__.queues (name) VALUES ($1)
			ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name RETURNING id, kind, ordered`),
		openSpec: s(`WITH d AS (
			INSERT INTO __Q__.queues (name) SELECT $4::text WHERE $4::text IS NOT NULL
			ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name RETURNING id)
			INSERT INTO __Q__.queues AS q (name, visibility_timeout_ms, max_attempts, dead_letter_id, ordered,
				retry_initial_us, retry_max_us, retry_multiplier, retry_jitter)
			VALUES ($1, $2, $3, (SELECT id FROM d), $5, $6, $7, $8, $9)
			ON CONFLICT (name) DO UPDATE SET visibility_timeout_ms = EXCLUDED.visibility_timeout_ms,
				max_attempts = EXCLUDED.max_attempts, dead_letter_id = EXCLUDED.dead_letter_id, ordered = EXCLUDED.ordered,
				retry_initial_us = EXCLUDED.retry_initial_us, retry_max_us = EXCLUDED.retry_max_us,
				retry_multiplier = EXCLUDED.retry_multiplier, retry_jitter = EXCLUDED.retry_jitter
			-- Ordering bookkeeping (parked messages) exists only in ordered
			-- queues, so the mode cannot change under messages.
			WHERE q.ordered = EXCLUDED.ordered OR NOT EXISTS (SELECT 1 FROM __Q__.messages WHERE queue_id = q.id)
			RETURNING id, kind, ordered`),
		declareTopic: s(`WITH t AS (
				INSERT INTO __Q__.queues (name, kind) VALUES ($1, 'topic')
				ON CONFLICT (name) DO UPDATE SET kind = 'topic' RETURNING id),
			sq AS (
				INSERT INTO __Q__.queues (name) SELECT unnest($2::text[])
				ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name RETURNING id),
			del AS (
				DELETE FROM __Q__.subscriptions s USING t
				WHERE s.topic_id = t.id AND s.queue_id NOT IN (SELECT id FROM sq))
			INSERT INTO __Q__.subscriptions (topic_id, queue_id) SELECT t.id, sq.id FROM t, sq
			ON CONFLICT DO NOTHING`),
		subscribe: s(`WITH t AS (
				INSERT INTO __Q__.queues (name, kind) VALUES ($1, 'topic')
				ON CONFLICT (name) DO UPDATE SET kind = 'topic' RETURNING id),
			sq AS (
				INSERT INTO __Q__.queues (name) VALUES ($2)
				ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name RETURNING id)
			INSERT INTO __Q__.subscriptions (topic_id, queue_id) SELECT t.id, sq.id FROM t, sq
			ON CONFLICT DO NOTHING`),
		unsubscribe: s(`DELETE FROM __Q__.subscriptions
			WHERE topic_id = (SELECT id FROM __Q__.queues WHERE name = $1)
			  AND queue_id = (SELECT id FROM __Q__.queues WHERE name = $2)`),

		// One statement per batch: the rows come from arrays, in order, so
		// the identity assigns seq in input order and RETURNING reports it.
		// Delays and TTLs are microseconds; -1 means forever.
		enqueue: s(`WITH ins AS (
				INSERT INTO __Q__.messages (queue_id, state, priority, visible_at, expires_at, id,
					ordering_key, content_type, correlation_id, attributes, body)
				SELECT $1,
					CASE WHEN $11::boolean AND u.k <> '' AND (row_number() OVER (PARTITION BY u.k ORDER BY u.ord) > 1
							OR EXISTS (SELECT 1 FROM __Q__.messages e WHERE e.queue_id = $1 AND e.ordering_key = u.k))
						THEN 3 WHEN u.d = 0 THEN 0 ELSE 1 END,
					u.p, __Q__.after(u.d),
					CASE WHEN u.t <= 0 OR u.d < 0 THEN NULL
						ELSE __Q__.after(u.d) + u.t * interval '1 microsecond' END,
					nullif(u.id, ''), nullif(u.k, ''), nullif(u.ct, ''), nullif(u.corr, ''),
					nullif(u.a, '')::jsonb, coalesce(u.b, '')
				FROM unnest($2::text[], $3::bytea[], $4::smallint[], $5::bigint[], $6::bigint[],
					$7::text[], $8::text[], $9::text[], $10::text[])
					WITH ORDINALITY AS u(id, b, p, d, t, k, ct, corr, a, ord)
				ORDER BY u.ord
				RETURNING seq)` + countInserted),
		// enqueue for a batch of bodies alone (no ID, priority, delay,
		// TTL, ordering key, content type, correlation ID or attributes):
		// every other column takes its default, which is what enqueue
		// would compute for such messages. It is the common publish, and
		// enqueue's window, CASEs and nine arrays cost the database about
		// twice as much per row.
		enqueuePlain: s(`WITH ins AS (
				INSERT INTO __Q__.messages (queue_id, body)
				SELECT $1, coalesce(u.b, '') FROM unnest($2::bytea[]) WITH ORDINALITY AS u(b, ord)
				ORDER BY u.ord
				RETURNING seq)` + countInserted),
		// A topic copies every message into each subscription; the IDs are
		// chosen by the caller so every copy carries the same one.
		enqueueTopic: s(`WITH subs AS (
				SELECT s.queue_id, o.ordered FROM __Q__.subscriptions s
				JOIN __Q__.queues o ON o.id = s.queue_id WHERE s.topic_id = $1 AND $11::boolean IS NOT NULL),
			ins AS (
				INSERT INTO __Q__.messages (queue_id, state, priority, visible_at, expires_at, id,
					ordering_key, content_type, correlation_id, attributes, body)
				SELECT s.queue_id,
					CASE WHEN s.ordered AND u.k <> '' AND (row_number() OVER (PARTITION BY s.queue_id, u.k ORDER BY u.ord) > 1
							OR EXISTS (SELECT 1 FROM __Q__.messages e WHERE e.queue_id = s.queue_id AND e.ordering_key = u.k))
						THEN 3 WHEN u.d = 0 THEN 0 ELSE 1 END,
					u.p, __Q__.after(u.d),
					CASE WHEN u.t <= 0 OR u.d < 0 THEN NULL
						ELSE __Q__.after(u.d) + u.t * interval '1 microsecond' END,
					u.id, nullif(u.k, ''), nullif(u.ct, ''), nullif(u.corr, ''),
					nullif(u.a, '')::jsonb, coalesce(u.b, '')
				FROM unnest($2::text[], $3::bytea[], $4::smallint[], $5::bigint[], $6::bigint[],
					$7::text[], $8::text[], $9::text[], $10::text[])
					WITH ORDINALITY AS u(id, b, p, d, t, k, ct, corr, a, ord)
				CROSS JOIN subs s
				ORDER BY u.ord, s.queue_id
				RETURNING queue_id),
			n AS (
				SELECT queue_id, count(*) AS n FROM ins GROUP BY queue_id
				UNION ALL SELECT $1, cardinality($2::text[])),
			c AS (
				INSERT INTO __Q__.counters AS c (queue_id, shard, enqueued)
				SELECT queue_id, pg_backend_pid() % 16, n FROM n
				ON CONFLICT (queue_id, shard) DO UPDATE SET enqueued = c.enqueued + EXCLUDED.enqueued)
			SELECT queue_id FROM n WHERE queue_id <> $1`),

		// Before a batch with ordering keys goes into an ordered queue (or a
		// topic, whose subscriptions may be ordered), its keys are locked in
		// order; the insert that follows sees every head committed before.
		lockKeys: s(`SELECT __Q__.lock_key(x.q, x.k) FROM (
				SELECT DISTINCT t.q, u.k, hashtext(u.k) AS h
				FROM unnest($2::text[]) AS u(k)
				CROSS JOIN (
					SELECT s.queue_id AS q FROM __Q__.subscriptions s
					JOIN __Q__.queues o ON o.id = s.queue_id WHERE s.topic_id = $1 AND o.ordered
					UNION ALL SELECT id FROM __Q__.queues WHERE id = $1 AND ordered) t
				WHERE u.k <> ''
				ORDER BY t.q, h) x`),
		dedupClaim: s(`INSERT INTO __Q__.dedup AS d (queue_id, dedup_id, expires_at)
			SELECT $1, x, now() + $3 * interval '1 microsecond' FROM unnest($2::text[]) x
			ON CONFLICT (queue_id, dedup_id) DO UPDATE SET expires_at = EXCLUDED.expires_at, message_id = NULL
				WHERE d.expires_at <= now()
			RETURNING dedup_id`),
		dedupLookup: s(`SELECT dedup_id, coalesce(message_id, '') FROM __Q__.dedup
			WHERE queue_id = $1 AND dedup_id = ANY($2::text[])`),
		dedupSet: s(`UPDATE __Q__.dedup d SET message_id = u.m
			FROM unnest($2::text[], $3::text[]) AS u(k, m)
			WHERE d.queue_id = $1 AND d.dedup_id = u.k`),
		countDuplicates: s(`SELECT __Q__.count_add($1, p_duplicate => $2)`),

		// Receive: lock up to $2 ready messages (skipping rows another
		// receiver holds), drop those whose TTL ran out and lease the rest
		// under token $4. Only heads of ordering keys are ever ready, so an
		// ordered queue needs nothing more here. Rows come back by kind: 0 a
		// lease; 1 how many expired; 2 an expired head of an ordered queue,
		// which expire() drops while handing its key on.
		lease: s(`WITH c AS (
				SELECT m.seq, m.expires_at IS NOT NULL AND m.expires_at <= now() AS dead,
					$3 AND m.ordering_key IS NOT NULL AS keyed
				FROM __Q__.messages m
				WHERE m.queue_id = $1 AND m.state = 0
				ORDER BY m.priority DESC, m.seq
				LIMIT $2
				FOR UPDATE OF m SKIP LOCKED),
			vt AS (SELECT visibility_timeout_ms AS ms FROM __Q__.queues WHERE id = $1),
			x AS (
				DELETE FROM __Q__.messages m USING c WHERE m.seq = c.seq AND c.dead AND NOT c.keyed RETURNING m.seq),
			cx AS (
				INSERT INTO __Q__.counters AS k (queue_id, shard, expired)
				SELECT $1, pg_backend_pid() % 16, count(*) FROM x HAVING count(*) > 0
				ON CONFLICT (queue_id, shard) DO UPDATE SET expired = k.expired + EXCLUDED.expired),
			l AS (
				UPDATE __Q__.messages m SET state = 2, attempt = m.attempt + 1, lease_token = $4,
					visible_at = now() + vt.ms * interval '1 millisecond', expires_at = NULL
				FROM c, vt WHERE m.seq = c.seq AND NOT c.dead
				RETURNING m.*, vt.ms)
			SELECT 0 AS kind, seq, coalesce(id, '') AS id, priority, enqueued_at, attempt, failures,
				coalesce(ordering_key, ''), coalesce(content_type, ''), coalesce(correlation_id, ''),
				attributes, body, ms
			FROM l
			UNION ALL
			SELECT 1, count(*), '', 0, now(), 0, 0, '', '', '', NULL, NULL, 0 FROM x HAVING count(*) > 0
			UNION ALL
			SELECT 2, seq, '', 0, now(), 0, 0, '', '', '', NULL, NULL, 0 FROM c WHERE c.dead AND c.keyed
			ORDER BY 1, 4 DESC, 2`),
		expire: s(`SELECT __Q__.expire($1)`),

		// Acks are batched: the rows whose lease is still held go, and the
		// counters of their queues move. A row that does not match was
		// settled, expired or re-leased: its ack is stale.
		//
		// "state + 0" keeps messages_due out of the plan: once the server
		// switches to a generic plan (it estimates 10 array elements), a
		// plain "state = 2" lets it pick a scan of every unexpired lease in
		// messages_due joined by hash, which costs O(messages in flight)
		// per ack batch; this way only the primary key can serve it.
		ack: s(`WITH d AS (
				DELETE FROM __Q__.messages m USING unnest($1::bigint[], $2::bigint[]) AS a(seq, token)
				WHERE m.seq = a.seq AND m.lease_token = a.token AND m.state + 0 = 2 AND m.visible_at > now()
				RETURNING m.queue_id),
			g AS (SELECT queue_id, count(*) AS n FROM d GROUP BY queue_id),
			c AS (
				INSERT INTO __Q__.counters AS c (queue_id, shard, acked)
				SELECT queue_id, pg_backend_pid() % 16, n FROM g
				ON CONFLICT (queue_id, shard) DO UPDATE SET acked = c.acked + EXCLUDED.acked)
			SELECT coalesce(sum(n), 0)::bigint FROM g`),
		ackOrdered: s(`SELECT __Q__.ack_ordered($1, $2)`),
		settle:     s(`SELECT r IS NULL, coalesce(r, '{}') FROM __Q__.settle($1, $2, $3, $4, $5) AS r`),
		extend: s(`UPDATE __Q__.messages SET visible_at = __Q__.after($3)
			WHERE seq = $1 AND lease_token = $2 AND state = 2 AND visible_at > now()`),

		reap:       s(`SELECT queue_id, due_in_us FROM __Q__.reap($1)`),
		pruneDedup: s(`DELETE FROM __Q__.dedup WHERE expires_at <= now()`),
		heal:       s(`SELECT * FROM __Q__.heal()`),

		stats: s(`SELECT
				(SELECT count(*) FROM __Q__.messages WHERE queue_id = $1 AND state IN (0, 3)),
				(SELECT count(*) FROM __Q__.messages WHERE queue_id = $1 AND state = 1),
				(SELECT count(*) FROM __Q__.messages WHERE queue_id = $1 AND state = 2),
				coalesce(sum(enqueued), 0)::bigint, coalesce(sum(acked), 0)::bigint, coalesce(sum(nacked), 0)::bigint,
				coalesce(sum(expired_lease), 0)::bigint, coalesce(sum(dead_lettered), 0)::bigint,
				coalesce(sum(expired), 0)::bigint, coalesce(sum(duplicate), 0)::bigint
			FROM __Q__.counters WHERE queue_id = $1`),

		peek: s(`SELECT ` + deliveryColumns + ` FROM __Q__.messages
			WHERE queue_id = $1 AND state IN (0, 1, 3)
			ORDER BY state = 1, CASE WHEN state <> 1 THEN priority END DESC,
				CASE WHEN state = 1 THEN visible_at END, seq
			LIMIT $2`),
		// One page of a scan in seq order ($2 is the last seq seen); $3
		// includes leased messages. The last column is the state a peek
		// reports: 0 ready (parked included), 1 delayed, 2 leased.
		peekPage: s(`SELECT ` + deliveryColumns + `,
				CASE WHEN state = 2 THEN 2 WHEN state = 1 AND visible_at > now() THEN 1 ELSE 0 END
			FROM __Q__.messages
			WHERE queue_id = $1 AND seq > $2 AND (state IN (0, 1, 3) OR ($3 AND state = 2))
			ORDER BY seq
			LIMIT $4`),
		purge: s(`WITH d AS (DELETE FROM __Q__.messages WHERE queue_id = $1 AND state IN (0, 1, 3) RETURNING 1)
			SELECT count(*) FROM d`),
		// Redrive moves dead letters back to the queue named by their
		// source attribute; $2 NULL means all of them. IDs are matched as
		// caller-chosen IDs ($2) or as generated ones (seq, $3).
		redrive: s(`WITH c AS (
				SELECT m.seq, s.id AS target FROM __Q__.messages m
				JOIN __Q__.queues s ON s.name = m.attributes->>'qrun.dead_letter.source' AND s.kind = 'queue'
				WHERE m.queue_id = $1 AND m.state IN (0, 1, 3)
				  AND ($2::text[] IS NULL OR m.id = ANY($2::text[]) OR (m.id IS NULL AND m.seq = ANY($3::bigint[])))
				FOR UPDATE OF m SKIP LOCKED),
			u AS (
				UPDATE __Q__.messages m SET queue_id = c.target, state = 0, visible_at = now(), attempt = 0,
					failures = 0, lease_token = NULL, expires_at = NULL,
					attributes = nullif(m.attributes - 'qrun.dead_letter.reason' - 'qrun.dead_letter.source', '{}'::jsonb)
				FROM c WHERE m.seq = c.seq
				RETURNING c.target),
			g AS (SELECT target, count(*) AS n FROM u GROUP BY target),
			k AS (
				INSERT INTO __Q__.counters AS k (queue_id, shard, enqueued)
				SELECT target, pg_backend_pid() % 16, n FROM g
				ON CONFLICT (queue_id, shard) DO UPDATE SET enqueued = k.enqueued + EXCLUDED.enqueued)
			SELECT target, n FROM g`),

		notify: `SELECT pg_notify($1, x::text) FROM unnest($2::int[]) x`,
	}
}
