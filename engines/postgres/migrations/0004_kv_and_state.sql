-- qrun postgres engine, schema version 4: key-value stores and per-message state.
-- __Q__ is replaced by the quoted schema name, and __CHANNEL__ by the notification channel, before this runs.
--
-- Stores are shared by every qrun process on the schema. A store's row in
-- kv_stores is its lock and its version counter: every transaction that
-- reads or writes a store's keys (KV.Apply, SettleTx) first updates that
-- row, which serialises them per store, and reserves the versions it hands
-- out from last_version. So a key read and then written by two deliveries
-- at once is checked against what the other committed, and versions are
-- never reused, not even for a key deleted and written again.

CREATE TABLE __Q__.kv_stores (
    name         text PRIMARY KEY,
    last_version bigint NOT NULL DEFAULT 0 CHECK (last_version >= 0),
    created_at   timestamptz NOT NULL DEFAULT now()
);

-- kv holds every store's keys. A row whose expires_at passed is absent for
-- every read; it is deleted by the next write that finds it and by sweeps.
CREATE TABLE __Q__.kv (
    store      text NOT NULL REFERENCES __Q__.kv_stores (name),
    key        bytea NOT NULL CHECK (length(key) BETWEEN 1 AND 512),
    value      bytea NOT NULL,
    version    bigint NOT NULL CHECK (version > 0),
    expires_at timestamptz,
    PRIMARY KEY (store, key)
);
CREATE INDEX kv_expires ON __Q__.kv (expires_at) WHERE expires_at IS NOT NULL;

-- message_state is the per-message state of a message (a handler's
-- progress across its retries). It goes with the message: the foreign key
-- deletes it with the row (ack, TTL, purge, dead letter without a
-- dead-letter queue), and the trigger below when the row moves to another
-- queue (dead letter, redrive), so a moved message starts without state.
CREATE TABLE __Q__.message_state (
    seq   bigint PRIMARY KEY REFERENCES __Q__.messages (seq) ON DELETE CASCADE,
    value bytea NOT NULL
);

CREATE FUNCTION __Q__.drop_moved_state() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM __Q__.message_state WHERE seq = NEW.seq;
    RETURN NULL;
END
$$;

CREATE TRIGGER messages_moved AFTER UPDATE OF queue_id ON __Q__.messages
    FOR EACH ROW WHEN (OLD.queue_id IS DISTINCT FROM NEW.queue_id)
    EXECUTE FUNCTION __Q__.drop_moved_state();
