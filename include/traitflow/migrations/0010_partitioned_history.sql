-- Traitflow schema, version 10: customer_profile_history partitioned by month of as_of.
--
-- Why: the history gains one row per profiled customer and day and was never pruned. With one
-- partition per month, retention drops whole months (a DROP TABLE: no DELETE, no dead rows, no
-- VACUUM of the rest), writes touch the current month's table and index only, and the
-- per-customer read (WHERE customer_id = ... ORDER BY as_of) stays an index probe per month,
-- merged in as_of order (Merge Append).
--
-- Layout: the parent is PARTITION BY RANGE (as_of); each partition holds one calendar month in
-- UTC, [first day 00:00 UTC, next month's first day), and is named
-- customer_profile_history_YYYY_MM. traitflow.store.partitions derives the same names and
-- bounds: they must not change. No DEFAULT partition: every writer creates the month it writes
-- before writing (write_profiles, in its own transaction) and the daily run creates months ahead,
-- so a row for a month without a partition can only come from outside the store, and it is
-- refused ("no partition of relation ... found for row") instead of landing in a catch-all
-- partition that would then have to be emptied before its month could be created.
--
-- Keys: the primary key (customer_id, as_of) contains the partition key, so it stays one
-- constraint over all partitions (each partition has its own index). The CHECK constraints keep
-- their names. No view or foreign key refers to this table.
--
-- The conversion is in place, in this migration's transaction: the old table is renamed, its rows
-- are copied into the partitions (same columns in the same order, same values), the primary key is
-- built once per loaded partition (a sorted build, cheaper than maintaining it row by row), the old
-- table is dropped and the new one analysed (autovacuum analyses the partitions later, never a
-- partitioned parent). The history is locked exclusively meanwhile: on a large database run it in
-- a maintenance window.

-- Month boundaries are UTC instants whatever the session's time zone.
SET LOCAL TimeZone = 'UTC';

ALTER TABLE customer_profile_history RENAME TO customer_profile_history_unpartitioned;
ALTER TABLE customer_profile_history_unpartitioned
    RENAME CONSTRAINT customer_profile_history_pkey TO customer_profile_history_unpartitioned_pkey;

CREATE TABLE customer_profile_history (
    customer_id       text COLLATE "C" NOT NULL,
    as_of             timestamptz NOT NULL,
    model_version     integer NOT NULL,
    traits            double precision[] NOT NULL,
    dominant_trait_id bigint NOT NULL,
    n_events          bigint NOT NULL,
    cold_start        text NOT NULL,
    n_known_tokens    bigint,
    -- Named as in versions 1 and 5 (generated names would get a suffix: the old table still holds
    -- these names until it is dropped).
    CONSTRAINT customer_profile_history_customer_id_check CHECK (char_length(customer_id) BETWEEN 1 AND 256),
    CONSTRAINT customer_profile_history_n_events_check CHECK (n_events >= 0),
    CONSTRAINT customer_profile_history_cold_start_check
        CHECK (cold_start IN ('none', 'few_tokens', 'no_history')),
    CONSTRAINT customer_profile_history_n_known_tokens_check CHECK (n_known_tokens BETWEEN 0 AND n_events)
) PARTITION BY RANGE (as_of);

-- One partition per month that holds rows; later months are created by the store.
DO $$
DECLARE
    first_day timestamp;  -- the month's first instant, as UTC wall-clock time
BEGIN
    FOR first_day IN
        SELECT DISTINCT date_trunc('month', as_of AT TIME ZONE 'UTC')
          FROM customer_profile_history_unpartitioned
         ORDER BY 1
    LOOP
        EXECUTE format(
            'CREATE TABLE %I PARTITION OF customer_profile_history FOR VALUES FROM (%L) TO (%L)',
            'customer_profile_history_' || to_char(first_day, 'YYYY_MM'),
            first_day AT TIME ZONE 'UTC',
            (first_day + interval '1 month') AT TIME ZONE 'UTC'
        );
    END LOOP;
END
$$;

INSERT INTO customer_profile_history
    (customer_id, as_of, model_version, traits, dominant_trait_id, n_events, cold_start, n_known_tokens)
SELECT customer_id, as_of, model_version, traits, dominant_trait_id, n_events, cold_start, n_known_tokens
  FROM customer_profile_history_unpartitioned;

ALTER TABLE customer_profile_history
    ADD CONSTRAINT customer_profile_history_pkey PRIMARY KEY (customer_id, as_of);

DROP TABLE customer_profile_history_unpartitioned;

ANALYZE customer_profile_history;
