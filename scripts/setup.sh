#!/usr/bin/env bash
# Create .venv (Python 3.11) and install the pinned dependencies plus the traitflow package.
# constraints.txt is a full `pip freeze` of a working install (Airflow's constraints URL is not
# reachable here); requirements*.txt hold the direct pins.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null || PYTHON=python3
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -r requirements-dev.txt -c constraints.txt
.venv/bin/python -m pip install --quiet --no-deps -e .
.venv/bin/python -m pip check
