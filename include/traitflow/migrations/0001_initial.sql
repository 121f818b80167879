-- Traitflow schema, version 1.
--
-- Applied by traitflow.store.migrations with search_path set to the target schema: objects are
-- never schema-qualified here, so one file serves any schema name (tests use one per test).
--
-- Conventions
-- * Identifiers (customer, product, token) are COLLATE "C": byte order is deterministic across
--   servers and locales, equals Python's code-point order, and compares fastest.
-- * Vectors: real[] holds float32 data, double precision[] float64, so binary COPY round-trips the
--   exact bits. "position" columns are 1-based: the PostgreSQL array subscript.
-- * Length limits mirror traitflow.schema (MAX_ID_LENGTH = 256, MAX_TEXT_LENGTH = 1024). Besides
--   enforcing the contract, they keep every indexed key far below the btree row limit (~2.7 KB).
-- * The bulk tables (events, customer_*) carry no foreign keys on purpose: an RI trigger per row
--   would dominate bulk-write time. The store checks the model version once per write instead.

CREATE TABLE events (
    customer_id text COLLATE "C" NOT NULL CHECK (char_length(customer_id) BETWEEN 1 AND 256),
    event_time  timestamptz NOT NULL,
    action      text COLLATE "C" NOT NULL
                CHECK (action IN ('view', 'wishlist', 'cart', 'remove_from_cart', 'purchase')),
    product_id  text COLLATE "C" NOT NULL CHECK (char_length(product_id) BETWEEN 1 AND 256),
    category    text CHECK (char_length(category) <= 1024),
    price       double precision,
    session_id  text CHECK (char_length(session_id) <= 1024),
    source      text NOT NULL,
    run_id      text NOT NULL,
    ingested_at timestamptz NOT NULL DEFAULT now(),
    -- Natural key: re-ingesting a file adds nothing twice (INSERT ... ON CONFLICT DO NOTHING).
    -- Its leading (customer_id, event_time) also serves the per-customer reads in event order.
    CONSTRAINT events_natural_key UNIQUE (customer_id, event_time, action, product_id)
);
-- Per-time reads: the daily run's window and "customers with events in [start, end)".
CREATE INDEX events_event_time_idx ON events (event_time);

CREATE TABLE ingested_files (
    sha256      text PRIMARY KEY CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    source      text NOT NULL,
    n_rows      bigint NOT NULL CHECK (n_rows >= 0),      -- rows read: valid events + rejects
    n_inserted  bigint NOT NULL CHECK (n_inserted >= 0),
    n_rejected  bigint NOT NULL CHECK (n_rejected >= 0),
    run_id      text NOT NULL,
    ingested_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE rejected_events (
    source      text NOT NULL,
    row_number  bigint NOT NULL,
    raw         text NOT NULL,
    reason      text NOT NULL,
    run_id      text NOT NULL,
    rejected_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source, row_number)
);
CREATE INDEX rejected_events_reason_idx ON rejected_events (reason);

CREATE TABLE model_versions (
    model_version      serial PRIMARY KEY,
    created_at         timestamptz NOT NULL DEFAULT now(),
    trained_through    timestamptz NOT NULL,
    status             text NOT NULL DEFAULT 'staging'
                       CHECK (status IN ('staging', 'active', 'retired', 'rejected')),
    status_reason      text,
    promoted_at        timestamptz,
    retired_at         timestamptz,
    format_version     integer NOT NULL,
    n_tokens           integer NOT NULL CHECK (n_tokens >= 0),
    vector_size        integer NOT NULL CHECK (vector_size >= 1),
    n_traits           integer NOT NULL CHECK (n_traits >= 1),
    params             jsonb NOT NULL,
    metrics            jsonb NOT NULL DEFAULT '{}',
    drift              jsonb,
    trait_match        jsonb,
    center             double precision[] NOT NULL,           -- TraitModel.center (training mean)
    population_profile double precision[] NOT NULL,
    population_vector  real[] NOT NULL,
    l1_penalty         double precision NOT NULL DEFAULT 0,   -- TraitModel.l1_penalty (projection)
    -- Exactly the models that were ever promoted (active now, or retired) carry promoted_at.
    CONSTRAINT model_versions_promoted_at_check
        CHECK ((status IN ('active', 'retired')) = (promoted_at IS NOT NULL)),
    CONSTRAINT model_versions_center_check CHECK (cardinality(center) = vector_size),
    CONSTRAINT model_versions_population_check
        CHECK (cardinality(population_profile) = n_traits AND cardinality(population_vector) = vector_size)
);
-- At most one active model, enforced by the database rather than by convention.
CREATE UNIQUE INDEX model_versions_one_active_idx ON model_versions ((true)) WHERE status = 'active';
-- model_version_for(as_of): newest promoted model trained through as_of.
CREATE INDEX model_versions_promoted_idx ON model_versions (trained_through DESC, model_version DESC)
    WHERE status IN ('active', 'retired');

CREATE TABLE token_vectors (
    model_version integer NOT NULL REFERENCES model_versions ON DELETE CASCADE,
    position      integer NOT NULL CHECK (position >= 1),
    token         text COLLATE "C" NOT NULL,
    action        text COLLATE "C" NOT NULL,
    product_id    text COLLATE "C" NOT NULL,
    category      text NOT NULL,                            -- '' when the product has none
    count         bigint NOT NULL,
    vector        real[] NOT NULL,
    PRIMARY KEY (model_version, position),
    UNIQUE (model_version, token)
);

CREATE TABLE trait_components (
    model_version  integer NOT NULL REFERENCES model_versions ON DELETE CASCADE,
    position       integer NOT NULL CHECK (position >= 1),   -- subscript into customer_profiles.traits
    trait_id       bigint NOT NULL,                           -- stable across retrains
    label          text NOT NULL,
    top_products   text[] NOT NULL,
    top_categories text[] NOT NULL,
    component      double precision[] NOT NULL,               -- a row of H (its width is the model's)
    PRIMARY KEY (model_version, position),
    UNIQUE (model_version, trait_id)
);

-- Current state: one row per customer, only ever moved forward in as_of.
CREATE TABLE customer_embeddings (
    customer_id   text COLLATE "C" PRIMARY KEY CHECK (char_length(customer_id) BETWEEN 1 AND 256),
    as_of         timestamptz NOT NULL,
    model_version integer NOT NULL,
    embedding     real[] NOT NULL,
    updated_at    timestamptz NOT NULL DEFAULT now()
) WITH (fillfactor = 80);  -- room for HOT updates: daily runs rewrite many current rows in place

CREATE TABLE customer_profiles (
    customer_id       text COLLATE "C" PRIMARY KEY CHECK (char_length(customer_id) BETWEEN 1 AND 256),
    as_of             timestamptz NOT NULL,
    model_version     integer NOT NULL,
    traits            double precision[] NOT NULL,           -- in trait_components.position order
    dominant_trait_id bigint NOT NULL,
    n_events          bigint NOT NULL CHECK (n_events >= 0),
    cold_start        text NOT NULL CHECK (cold_start IN ('none', 'few_tokens', 'no_history')),
    updated_at        timestamptz NOT NULL DEFAULT now()
) WITH (fillfactor = 80);
-- No secondary index on purpose: the consumer queries (top customers of a trait, trait sizes,
-- similar customers) scan all current profiles anyway, and with only the primary key the daily
-- rewrites of current rows can be HOT updates (no index maintenance).

-- Every profile ever written, keyed by (customer, as_of): re-running a date replaces its rows.
CREATE TABLE customer_profile_history (
    customer_id       text COLLATE "C" NOT NULL CHECK (char_length(customer_id) BETWEEN 1 AND 256),
    as_of             timestamptz NOT NULL,
    model_version     integer NOT NULL,
    traits            double precision[] NOT NULL,
    dominant_trait_id bigint NOT NULL,
    n_events          bigint NOT NULL CHECK (n_events >= 0),
    cold_start        text NOT NULL CHECK (cold_start IN ('none', 'few_tokens', 'no_history')),
    PRIMARY KEY (customer_id, as_of)
);

-- One row per (customer, trait) of the current profiles, for SQL consumers:
--   SELECT customer_id, score FROM customer_trait_scores WHERE trait_id = 7 ORDER BY score DESC LIMIT 10;
-- A join on the model's components rather than unnest(): a filter on trait_id selects one
-- component per model first, so the query reads one array element per profile.
CREATE VIEW customer_trait_scores AS
SELECT p.customer_id,
       p.as_of,
       p.model_version,
       c.trait_id,
       c.label,
       p.traits[c.position] AS score
FROM customer_profiles p
JOIN trait_components c ON c.model_version = p.model_version;

CREATE TABLE run_reports (
    kind       text NOT NULL,
    run_key    text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    report     jsonb NOT NULL,
    PRIMARY KEY (kind, run_key)
);
CREATE INDEX run_reports_updated_idx ON run_reports (updated_at DESC);
