-- Traitflow schema, version 4: product names.
--
-- A name is an attribute of a product, not of an event: order-line exports repeat it on every
-- line (Online Retail's Description), not always spelled the same. The loader counts the names
-- a file gives each product (traitflow.events LoadResult.products); ingestion stores the file's
-- most frequent one here, in the ingestion's own transaction. The latest file that names a
-- product decides its name; re-ingesting a file changes nothing. Labels, the CLI and the UI
-- read names from here; events, tokens and models never depend on them.

CREATE TABLE product_names (
    product_id   text COLLATE "C" PRIMARY KEY CHECK (char_length(product_id) BETWEEN 1 AND 256),
    product_name text NOT NULL CHECK (char_length(product_name) BETWEEN 1 AND 1024),
    source       text NOT NULL,      -- the file (or source name) the name was taken from
    run_id       text NOT NULL,
    updated_at   timestamptz NOT NULL DEFAULT now()
);
