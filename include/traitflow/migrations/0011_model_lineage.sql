-- Traitflow schema: how a model's token vectors were trained (its lineage).
--
-- A weekly candidate is trained from scratch ('full') or continues the active model's vectors on
-- the sessions since that model's trained_through ('incremental'); parent_version is the model it
-- started from and trained_since that model's trained_through. Models saved before this column
-- existed, or outside the weekly retrain, have no training_mode.

ALTER TABLE model_versions
    ADD COLUMN training_mode text CHECK (training_mode IN ('full', 'incremental')),
    ADD COLUMN parent_version integer REFERENCES model_versions (model_version),
    ADD COLUMN trained_since timestamptz,
    ADD CONSTRAINT model_versions_lineage_check CHECK (
        (training_mode = 'incremental') = (parent_version IS NOT NULL AND trained_since IS NOT NULL)
        AND (training_mode IS NOT NULL OR (parent_version IS NULL AND trained_since IS NULL))
    );
