"""Traitflow's Airflow 3.3 plugin: a "Traits" page in the Airflow UI and a JSON API (reads and event posts).

This file only registers the plugin; the app lives in the ``traitflow_web`` package next to it
(see its docstring for which module does what). Airflow imports every ``.py`` file under the
plugins folder as a plugin module; ``.airflowignore`` keeps ``traitflow_web/`` out of that, and
this file imports the package by name: importing ``airflow``, which it does first, puts the
plugins folder on ``sys.path`` (``airflow.settings.prepare_syspath_for_config_and_plugins``).

What it registers (``TraitflowPlugin``)
---------------------------------------
* ``fastapi_apps``: one FastAPI app mounted by the api-server under ``/traitflow`` (below
  ``[api] base_url`` when Airflow is served under a sub-path):

  ===============================================  ==========================================
  ``GET /traitflow/``                               the HTML page (traits, customer lookup,
                                                    models, run reports); static assets under
                                                    ``/traitflow/static/``
  ``GET /traitflow/api/traits?model_version=``      traits of the active (or given) model:
                                                    labels, top products/categories, size
  ``GET /traitflow/api/traits/{id}/top?n=``         top customers of a trait (n in 1..1000)
  ``GET /traitflow/api/customers/{id}``             current profile with labels (404 if never
                                                    profiled); ``?embedding=true`` adds the vector
  ``GET /traitflow/api/customers/{id}/history``     every stored profile, oldest first
  ``GET /traitflow/api/customers/{id}/similar?n=``  nearest current profiles (cosine, same model)
  ``GET /traitflow/api/customers/{id}/products``    the products the profile ranks highest (the
  ``?n=&new_only=``                                 ranking ``traitflow evaluate`` measures; n in
                                                    1..500; new_only leaves out products the
                                                    customer had events on)
                                                    (ids may contain "/", raw or as %2F; an id
                                                    ending in "/history", "/similar" or
                                                    "/products" is not addressable)
  ``GET /traitflow/api/models``                     model versions: status, trained_through,
                                                    metrics, drift, trait_match
  ``GET /traitflow/api/reports?kind=&limit=``       newest run reports (limit in 1..200)
  ``GET /traitflow/api/status``                     schema version, active model, exact row
                                                    counts (counts every table: not for polling)
  ``GET /traitflow/api/charts/trait-sizes?times=``  trait sizes at the newest profile times
                                                    (times in 1..365)
  ``GET /traitflow/api/charts/model-quality``       per model version: held-out hit rate, its
                                                    baseline and margin, weighted mean and
                                                    recent-weighted drift, the refit threshold
                                                    of its mode (full or incremental)
  ``GET /traitflow/api/charts/trait-map?n=``        2-D map of a deterministic sample of current
                                                    profiles (n in 1..5000), by dominant trait
  ``POST /traitflow/api/customers/{id}/events``    a customer's events (``{"events": [...]}``,
                                                    canonical fields, at most 10,000): validated,
                                                    stored, profile recomputed and returned
  ``POST /traitflow/api/events``                    the same for events of many customers (each
                                                    with its ``customer_id``)
  ``GET /traitflow/docs``, ``/traitflow/openapi.json``  the app's own OpenAPI docs (no data);
                                                    Swagger UI from the static folder, no CDN
  ``GET /traitflow/metrics``                        Prometheus exposition: aggregates only
                                                    (``traitflow_web.metrics``)
  ===============================================  ==========================================

  The event posts (``traitflow_web.events``, ``traitflow.online_update``) answer 200 with the
  counts (received = stored + rejected), each reject's row number and reason and the profiles
  written; 422 when every event was rejected (the rejects are still listed and recorded); 409
  when the events were stored but no model is promoted for their date yet; 413 for a body over
  16 MiB. A re-post of the same body adds nothing.

  Bad parameters give FastAPI's 422 JSON (``{"detail": [{"loc": [...], "msg": ...}]}``); other
  errors are ``{"detail": "<message>"}``: 404 unknown customer/trait/model (or no active model
  yet), 503 database unreachable or schema not migrated (``traitflow db upgrade``).
  A customer id containing ``/`` cannot be addressed in a path (the server decodes ``%2F``
  before routing); no current input format produces such ids.
* ``external_views``: a nav entry "Traits" under *Browse* (``destination="nav"``,
  ``url_route="traitflow"``): the UI shows the page in an iframe at ``/plugin/traitflow``.

Authentication is Airflow's own, on every route but the static files, the OpenAPI docs and
the metrics (``traitflow_web.auth``; the metrics take an optional token of their own); the event
posts also need POST on the ``Traitflow`` view and on assets (simple auth manager: role op or
admin; ``traitflow_web.events``). The database is the DAGs' (``traitflow_web.pool``). Importing
this file does no database or connection lookup and loads neither numpy, pandas nor psycopg.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin
from traitflow_web.app import TRAITS_VIEW, URL_PREFIX, app


class TraitflowPlugin(AirflowPlugin):
    """Traits view + API (see the module docstring)."""

    name = "traitflow"
    fastapi_apps = [{"app": app, "url_prefix": URL_PREFIX, "name": "Traitflow traits API"}]  # noqa: RUF012
    external_views = [dict(TRAITS_VIEW)]  # noqa: RUF012
