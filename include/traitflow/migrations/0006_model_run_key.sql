-- Traitflow schema: the run key of a published model.
--
-- The weekly promotion saves a candidate, writes its profiles and activates it in one
-- transaction (Store.publish). An Airflow retry of that task after its COMMIT (the worker died
-- before reporting success, a timeout hit while COMMIT was in flight) must not publish the same
-- candidate a second time: publish records the candidate's key (a fingerprint of the candidate's
-- files) here, and a publish that finds its key already recorded changes nothing and returns the
-- version published the first time. Models saved any other way have no key.

ALTER TABLE model_versions
    ADD COLUMN run_key text CHECK (run_key IS NULL OR char_length(run_key) BETWEEN 1 AND 256);
CREATE UNIQUE INDEX model_versions_run_key_idx ON model_versions (run_key) WHERE run_key IS NOT NULL;
