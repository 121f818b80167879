-- Traitflow schema, version 5: every profile carries the evidence behind it.
--
-- n_known_tokens: how many of the customer's events (n_events) have a token the model knows,
-- i.e. how many token vectors the profile rests on (ProfileBatch.n_known_tokens). Consumers show
-- it with a confidence n / (n + c) (traitflow.profiles.profile_confidence) and leave out
-- customers with too little evidence by default (traitflow.profiles.MIN_EVIDENCE_EVENTS).
--
-- NULL for rows written before this version (the count was not recorded; it is not guessed):
-- the next daily run or weekly recompute of a customer fills it in. Adding a nullable column
-- without a default changes only the catalogue; its CHECK constraints scan each table once
-- (all NULL, nothing to rewrite). customer_profiles keeps its fillfactor and its lack of
-- secondary indexes (0001, 0003): rewrites of current rows stay HOT updates.

ALTER TABLE customer_profiles
    ADD COLUMN n_known_tokens bigint,
    ADD CONSTRAINT customer_profiles_n_known_tokens_check
        CHECK (n_known_tokens BETWEEN 0 AND n_events);

ALTER TABLE customer_profile_history
    ADD COLUMN n_known_tokens bigint,
    ADD CONSTRAINT customer_profile_history_n_known_tokens_check
        CHECK (n_known_tokens BETWEEN 0 AND n_events);

-- The evidence beside each score, for SQL consumers ("top customers of trait 7 with at least 3
-- events"). CREATE OR REPLACE VIEW may only append columns: the existing ones keep their order.
CREATE OR REPLACE VIEW customer_trait_scores AS
SELECT p.customer_id,
       p.as_of,
       p.model_version,
       c.trait_id,
       c.label,
       p.traits[c.position] AS score,
       p.n_events,
       p.n_known_tokens,
       p.cold_start
FROM customer_profiles p
JOIN trait_components c ON c.model_version = p.model_version;
