"""Shared test set-up: the real local services and an Airflow metadata DB, as pytest plugins; the
tests that need the spec's original text (marker ``spec_text``) skipped where it is missing, or
failed where it must be there (``HURREN_REQUIRE_SPEC_TEXT``, set by ``.ci/run``)."""

import os

import pytest

from tests import spec_text

pytest_plugins = ["tests.fixtures.services", "tests.fixtures.airflow", "tests.fixtures.regions"]


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("spec_text") is None or (reason := spec_text.missing()) is None:
        return
    if os.environ.get("HURREN_REQUIRE_SPEC_TEXT"):
        pytest.fail(f"{reason} (HURREN_REQUIRE_SPEC_TEXT is set: CI always has the spec text)", pytrace=False)
    pytest.skip(reason)
