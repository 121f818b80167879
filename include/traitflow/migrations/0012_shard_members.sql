-- Traitflow schema, version 12: which customers each shard of a sharded profile run computes.
--
-- The plan task of a sharded run (daily plan_update, weekly plan_recompute) hashes the run's
-- customers once (traitflow.shards) and stores the result here: one shard_plans row per run key,
-- one shard_members row per customer. Each shard task then reads its own customers, and their
-- events, by joining on shard_members: no shard reads or hashes the others' customers.
--
-- plan_id is new for every plan attempt: a retried plan deletes the run's earlier plan with its
-- members and staged batches, then writes a new one, so a shard still holding an earlier
-- attempt's plan_id finds nothing instead of another membership. The commit (or promotion)
-- deletes the run's plan in the transaction that writes the profiles, and plans older than a few
-- days that a run abandoned are deleted by the next plan or commit
-- (traitflow.store.profile_shards.STALE_AFTER).
--
-- shard_members.plan_id has no foreign key: a plan's members are written and deleted in the
-- transaction that writes or deletes its shard_plans row (traitflow.store.shard_members), and a
-- per-row key check more than doubles the time of the plan's COPY.

CREATE TABLE shard_plans (
    plan_id    bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_key    text        NOT NULL UNIQUE,
    n_shards   integer     NOT NULL CHECK (n_shards >= 1),
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX shard_plans_created_idx ON shard_plans (created_at);

CREATE TABLE shard_members (
    plan_id     bigint  NOT NULL,
    shard       integer NOT NULL CHECK (shard >= 0),
    customer_id text COLLATE "C" NOT NULL,
    PRIMARY KEY (plan_id, shard, customer_id)
);
