-- Traitflow schema, version 7: each model's trait product distributions.
--
-- P(product | trait), estimated at fit time from the training events of the customers holding
-- each trait (traitflow.trait_products), ranks products for a profile as a mixture. One row per
-- model: the product ids (sorted, the union of the traits' top products) and the weights as one
-- row-major (n_traits x n_products) float8 array, so a model reads back bit-identically. Models
-- saved without distributions have no row.
CREATE TABLE trait_products (
    model_version integer PRIMARY KEY REFERENCES model_versions ON DELETE CASCADE,
    product_ids   text[] NOT NULL,
    weights       double precision[] NOT NULL
);
