-- Traitflow schema, version 9: the staging area of customer-sharded profile computation.
--
-- A daily update or weekly recompute with n_shards > 1 runs one task per customer shard
-- (traitflow.shards); each writes its ProfileBatch (the .npz bytes of ProfileBatch.to_bytes)
-- here, under the run's key and its shard number, in one transaction that replaces the shard's
-- own row: a retried shard overwrites its earlier attempt, never adds a second batch. The commit
-- task reads all n_shards rows, writes the profiles (and, weekly, the promotion) and deletes the
-- run's rows in one transaction; it also deletes rows older than a few days that a run abandoned
-- (traitflow.store.profile_shards.STALE_AFTER).
--
-- model_version is NULL for a weekly candidate (it has no version until its promotion commits).

CREATE TABLE profile_shards (
    run_key       text        NOT NULL,
    shard         integer     NOT NULL CHECK (shard >= 0),
    n_shards      integer     NOT NULL CHECK (n_shards >= 1 AND shard < n_shards),
    as_of         timestamptz NOT NULL,
    model_version integer,
    n_rows        integer     NOT NULL CHECK (n_rows >= 0),
    batch         bytea       NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_key, shard)
);

CREATE INDEX profile_shards_created_idx ON profile_shards (created_at);
