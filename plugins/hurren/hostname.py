"""The host name Airflow records for a task (``[core] hostname_callable``, set by
``scripts/airflow-env``): ``$HURREN_HOSTNAME`` when set, else the machine's name as Airflow's
default gives it. ``scripts/airflow up --celery`` starts its two Celery workers on one machine
with a name each (as the compose stack's worker containers have theirs), so the UI and the
metadata database say which worker ran a task."""

from __future__ import annotations

import os
import socket


def hostname() -> str:
    return os.environ.get("HURREN_HOSTNAME") or socket.getfqdn()
