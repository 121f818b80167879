-- Traitflow schema, version 13: the newer candidate that superseded a rejected staging version.
--
-- Once a weekly candidate is published (promoted, or rejected by the gate), every older staging
-- version is rejected as superseded by it in the same transaction
-- (traitflow.store.models.supersede_staging). superseded_by records that candidate's version,
-- and Store.superseded_by lists the versions a candidate superseded by this column, so a retried
-- publish counts the same versions whatever status_reason says (the reason keeps its text, for
-- people reading `traitflow models`).
--
-- Rows superseded before this column existed are recognised by the reason supersede_staging
-- wrote, word for word: "superseded by version N before its run promoted it". Only an N that is
-- an existing, newer version is recorded (supersede_staging rejects only older versions, in the
-- transaction of a version it has saved): any other text stays a reason and nothing more.
--
-- The CHECK keeps the column to rejected rows, pointing forward. Rejected is a final status
-- (promotion refuses a rejected model and nothing else moves one), so no update clears it.

ALTER TABLE model_versions
    ADD COLUMN superseded_by integer REFERENCES model_versions (model_version);

UPDATE model_versions AS old
   SET superseded_by = newer.model_version
  FROM model_versions AS newer
 WHERE old.status = 'rejected'
   AND newer.model_version::text
       = substring(old.status_reason FROM '^superseded by version ([0-9]+) before its run promoted it$')
   AND newer.model_version > old.model_version;

ALTER TABLE model_versions
    ADD CONSTRAINT model_versions_superseded_by_check CHECK (
        superseded_by IS NULL OR (status = 'rejected' AND superseded_by > model_version)
    );
