-- Traitflow schema, version 8: each event row records the transaction that ingested it.
--
-- ingest_xid: the 64-bit id of the inserting transaction (pg_current_xact_id()). A weekly run
-- takes one snapshot when it starts (pg_current_snapshot()) and every read of that run keeps
-- the events whose ingest_xid is visible in it (pg_visible_in_snapshot), so the corpus, the
-- trait fit and the recomputed profiles all see exactly what was committed when the run started,
-- whatever daily ingest commits in between. A timestamp (ingested_at) cannot do this: it is the
-- transaction's start, and a transaction that started earlier can commit later; a sequence has
-- the same gap. A transaction id checked against a snapshot is exact.
--
-- NULL for rows ingested before this version: they were committed before any snapshot taken
-- from now on, and reads treat NULL as visible. Adding a nullable column and then setting its
-- default changes only the catalogue (no table rewrite).

ALTER TABLE events ADD COLUMN ingest_xid xid8;
ALTER TABLE events ALTER COLUMN ingest_xid SET DEFAULT pg_current_xact_id();

-- The daily selection asks which customers had events delivered in the day's files (late events
-- included, traitflow.store.reads.customers_with_events): a lookup by source.
CREATE INDEX events_source_idx ON events (source);
