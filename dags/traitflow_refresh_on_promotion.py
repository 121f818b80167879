"""traitflow_refresh_on_promotion: re-project every current profile when a new model goes live."""

from __future__ import annotations

from airflow.sdk import dag, task

from traitflow_common import DEFAULT_ARGS, MODEL_ASSET, TAGS, fail_fast, run_context, start_date

DOC_MD = """
### Traitflow refresh on promotion

Scheduled on the asset `traitflow://models/active`, which `traitflow_weekly_retrain.promote`
emits (its event extra carries `model_version`). Recomputes all current profiles under the newly
active model so consumers never mix trait spaces. Can also be triggered by hand.
"""


@dag(
    dag_id="traitflow_refresh_on_promotion",
    schedule=[MODEL_ASSET],
    start_date=start_date(),
    catchup=False,
    max_active_runs=1,  # two promotions in a row: the second refresh waits, then uses the newest model
    default_args=DEFAULT_ARGS,
    tags=TAGS,
    doc_md=DOC_MD,
)
def traitflow_refresh_on_promotion() -> None:
    @task(multiple_outputs=False)
    @fail_fast
    def refresh_profiles() -> dict:
        from traitflow import jobs

        return jobs.refresh_all_profiles(run_context()).to_xcom()

    refresh_profiles()


traitflow_refresh_on_promotion()
