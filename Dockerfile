# Traitflow on the official Airflow 3.3.2 image (Python 3.11, same as the dev venv).
# Build: docker compose build   (see docker-compose.yaml)
FROM apache/airflow:3.3.2-python3.11

# The official image runs as "airflow" (uid 50000, gid 0) and installs into its user site.
USER airflow
WORKDIR /opt/traitflow

# Dependencies first, in their own layer: rebuilt only when the pins change.
# constraints.txt is the full freeze of a working install (Airflow's constraints URL is not
# reachable from the build environment either); it pins apache-airflow==3.3.2, so pip cannot
# swap the image's Airflow for another version.
COPY --chown=airflow:0 requirements.txt constraints.txt ./
RUN pip install --no-cache-dir -r requirements.txt -c constraints.txt

# The project: `traitflow` package (editable, so the ./include bind mount of docker-compose
# replaces the baked copy during development) plus dags/ and plugins/ for mount-less runs.
COPY --chown=airflow:0 . .
RUN pip install --no-cache-dir --no-deps -e . \
    && mkdir -p data

ENV TRAITFLOW_DATA_DIR=/opt/traitflow/data \
    AIRFLOW__CORE__DAGS_FOLDER=/opt/traitflow/dags \
    AIRFLOW__CORE__PLUGINS_FOLDER=/opt/traitflow/plugins \
    AIRFLOW__CORE__LOAD_EXAMPLES=False
