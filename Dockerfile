# The hurren image: the official Airflow image, extended with our pinned requirements and code.
# Every Airflow component of docker-compose.yml (api-server, scheduler, dag-processor, triggerer,
# Celery workers, airflow-init) and the platform simulator run this one image.
#
#   docker compose build            (or: docker build -t hurren-airflow:local .)
#
# The Airflow version of the base image must be the lock's apache-airflow pin: pip refuses to
# build otherwise (tests/unit/test_compose.py checks the default below against requirements.lock).
ARG AIRFLOW_BASE_IMAGE=apache/airflow:3.3.2-python3.11
FROM ${AIRFLOW_BASE_IMAGE}

# Installed as the image's `airflow` user, into its Python, the way the image's docs extend it.
USER airflow

# A PyPI mirror for the build, where pypi.org is slow or out of reach (empty: pip's default index).
# Named so that pip never reads it by itself (pip would take an empty PIP_INDEX_URL literally).
ARG HURREN_PIP_INDEX_URL=

# Our requirements: requirements.lock (exact pins, what the tests ran) less the developer tools
# (pytest, hypothesis, ruff, the local S3 server binary) and what only they need.
# "apache-airflow==${AIRFLOW_VERSION}" keeps pip from moving the image's own Airflow.
COPY --chown=airflow:0 requirements.lock docker/image_requirements.py /tmp/hurren-build/
RUN python /tmp/hurren-build/image_requirements.py /tmp/hurren-build/requirements.lock \
        > /tmp/hurren-build/requirements-image.txt \
 && pip install --no-cache-dir ${HURREN_PIP_INDEX_URL:+--index-url "$HURREN_PIP_INDEX_URL"} \
        "apache-airflow==${AIRFLOW_VERSION}" -r /tmp/hurren-build/requirements-image.txt \
 && rm -rf /tmp/hurren-build \
 && { pip check || echo "WARNING: pip check found the conflicts above between our pins and providers preinstalled in the base image; the import check below decides"; }

# The code: DAG files, the library (package `hurren` under plugins/), the spec and SQL files, and
# the stack's Airflow scripts. Baked in, not mounted: an upgrade is a new image. The test kit
# (testkit/, for the simulator of the compose `test` profile) is copied but not on PYTHONPATH:
# only the simulator service puts it there (docker-compose.yml).
COPY --chown=airflow:0 dags/ /opt/airflow/dags/
COPY --chown=airflow:0 plugins/ /opt/airflow/plugins/
COPY --chown=airflow:0 testkit/ /opt/airflow/testkit/
COPY --chown=airflow:0 include/ /opt/airflow/include/
COPY --chown=airflow:0 docker/airflow/ /opt/airflow/docker/

# `hurren` importable by every process (task runners and `python -m hurren_testkit.simulator` too).
# /opt/airflow/site: the site's own configuration (sources.json, spec-options.json, rules.json,
# mappings, dictionaries), mounted read-only by docker-compose.yml, which points HURREN_SITE_DIR there.
# /opt/airflow/sim-data: the simulator's key pair and SQLite file (a volume in the test profile);
# group 0 writable, because compose may run the container as any uid in group 0 (AIRFLOW_UID).
ENV PYTHONPATH=/opt/airflow/plugins
RUN mkdir -p /opt/airflow/site /opt/airflow/sim-data \
 && chmod -R g+rwX /opt/airflow/sim-data \
 && python -c "import airflow.providers.celery, airflow.providers.postgres, airflow.providers.oracle, \
airflow.providers.microsoft.mssql, celery, redis, oracledb, pymssql, psycopg, psycopg2, minio, lxml, zeep, \
great_expectations, hurren.settings, hurren.sources, hurren.spec, hurren.crypto, hurren.pipeline; print('hurren image: imports ok')" \
 && PYTHONPATH=/opt/airflow/plugins:/opt/airflow/testkit python -c "import hurren_testkit.simulator.server"
