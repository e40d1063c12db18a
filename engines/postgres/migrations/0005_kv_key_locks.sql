-- qrun postgres engine, schema version 5: key-value writes lock keys, not stores.
-- __Q__ is replaced by the quoted schema name before this runs.
--
-- Until version 4 every transaction that read or wrote a store's keys
-- updated the store's row of kv_stores first, its lock and its version
-- counter, so the transactions of one store ran one at a time, each
-- holding the row until its COMMIT (fsync included). From version 5 a
-- transaction takes a transaction-scoped advisory lock per key it names
-- (all of them in ascending lock id, so two transactions cannot deadlock)
-- and then takes the versions it hands out from the one sequence below:
-- transactions on disjoint keys of a store commit in parallel, and a key
-- read and then written by two of them at once is still checked against
-- what the other committed.
--
-- Versions stay unique within every store (now across all stores) and grow
-- for each key: the sequence starts above every version handed out so far,
-- and a transaction draws from it only once it holds its keys' locks.
-- MAXVALUE leaves the top of the bigint range to the engine's placeholders
-- for versions not yet drawn.
CREATE SEQUENCE __Q__.kv_version AS bigint MINVALUE 1 MAXVALUE 4611686018427387903;

SELECT setval('__Q__.kv_version', greatest(
    (SELECT coalesce(max(last_version), 0) FROM __Q__.kv_stores),
    (SELECT coalesce(max(version), 0) FROM __Q__.kv)) + 1, false);

-- Dropping the old counter makes a qrun of an older version fail every
-- write of a store rather than hand out versions this one also hands out
-- (it already refuses to start on a schema newer than it knows).
ALTER TABLE __Q__.kv_stores DROP COLUMN last_version;
