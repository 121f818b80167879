"""The Traitflow plugin's FastAPI app, split by concern; ``plugins/traitflow_plugin.py`` registers it.

* ``pool``: pooled ``traitflow.store.Store`` objects, one per request, and the request dependency.
* ``errors``: store and database failures as HTTP errors (404, 503).
* ``auth``: Airflow's own authentication and the ``Traitflow`` custom-view permission.
* ``schemas``: the request and response models and the conversion of store values into them.
* ``api``: the read-only JSON routes under ``/api`` (profile reads through the Redis profile cache).
* ``events``: the event posts under ``/api`` (op/admin), their 422 encoding and body size limit.
* ``charts``: the JSON routes of the page's charts under ``/api/charts``.
* ``metrics``: the Prometheus exposition at ``/metrics`` and the request-latency middleware.
* ``page``: the HTML page.
* ``app``: the app factory (and its Swagger UI docs page), the app and the nav entry.

Airflow imports every ``.py`` file under the plugins folder as a plugin module;
``plugins/.airflowignore`` keeps it out of this package, which ``traitflow_plugin.py`` imports
by name (Airflow puts the plugins folder on ``sys.path`` when it starts).

Import cost: every Airflow process imports plugins, so the modules import only FastAPI,
pydantic and light Airflow modules at top level; ``traitflow`` (numpy, pandas, psycopg, pyarrow)
and Airflow's security module are imported on the first request.
"""
