"""Shared test set-up: the real local services and an Airflow metadata DB, as pytest plugins."""

pytest_plugins = ["tests.fixtures.services", "tests.fixtures.airflow"]
