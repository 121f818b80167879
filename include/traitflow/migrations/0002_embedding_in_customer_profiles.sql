-- Traitflow schema, version 2: the current embedding moves into customer_profiles.
--
-- customer_embeddings and customer_profiles were both keyed by customer_id, written from the same
-- ProfileBatch in the same transaction under the same forward-only as_of rules, so they always held
-- one row each for the same customers at the same (as_of, model_version). One row per customer now
-- holds both: a profile write inserts / moves forward one current row instead of two.
--
-- embedding is NOT NULL: every ProfileBatch carries one float32 embedding per customer
-- (traitflow.store.profiles checks the (n, vector_size) shape, vector_size >= 1), so no current
-- profile exists without one.
--
-- The migration refuses (and the schema stays at version 1) if the two tables disagree: a profile
-- without an embedding, an embedding without a profile, or a pair at a different as_of/model_version
-- would otherwise be lost or mixed silently.
--
-- On a large database the UPDATE below writes a new version of every current row: run
-- VACUUM customer_profiles afterwards to make the old versions' space reusable.

DO $$
DECLARE
    problem text;
BEGIN
    SELECT format('customer %L: profile (as_of %s, model %s) vs embedding (as_of %s, model %s)',
                  coalesce(p.customer_id, e.customer_id), p.as_of, p.model_version, e.as_of, e.model_version)
      INTO problem
      FROM customer_profiles p
      FULL JOIN customer_embeddings e ON e.customer_id = p.customer_id
     WHERE p.customer_id IS NULL OR e.customer_id IS NULL
        OR (p.as_of, p.model_version) IS DISTINCT FROM (e.as_of, e.model_version)
     LIMIT 1;
    IF problem IS NOT NULL THEN
        RAISE EXCEPTION 'customer_profiles and customer_embeddings disagree, not merging them: %', problem
            USING HINT = 'rewrite those customers'' profiles at schema version 1, then upgrade again';
    END IF;
END
$$;

-- Appended as the last column (ALTER TABLE cannot place it elsewhere). The table keeps its
-- fillfactor = 80 and, on purpose, no secondary index (see 0001): daily rewrites of current rows
-- can stay HOT updates.
ALTER TABLE customer_profiles ADD COLUMN embedding real[];

-- updated_at: the row's content last changed when either of the two rows did.
UPDATE customer_profiles p
   SET embedding = e.embedding,
       updated_at = greatest(p.updated_at, e.updated_at)
  FROM customer_embeddings e
 WHERE e.customer_id = p.customer_id;

ALTER TABLE customer_profiles ALTER COLUMN embedding SET NOT NULL;

DROP TABLE customer_embeddings;
