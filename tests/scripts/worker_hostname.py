"""``[core] hostname_callable`` of the Celery test's workers (tests/scripts/test_celery_executor.py).

Airflow records in each task instance's ``hostname`` what this callable returns in the process
that ran the task. Two workers on one machine share its host name, so each worker is started
with its own ``TRAITFLOW_TEST_WORKER`` (the same name as its ``--celery-hostname``) and the
metadata database tells which worker ran which task.
"""

from __future__ import annotations

import os


def hostname() -> str:
    return os.environ["TRAITFLOW_TEST_WORKER"]
