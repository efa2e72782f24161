"""The test and demo kit: what tests, benchmarks and the demo need, and the library never imports.

- ``simulator``: the region platform (SOAP, SM2/SM4, the spec's checks, fault injection);
  ``python -m hurren_testkit.simulator``.
- ``synthetic``: synthetic hospital databases (the spec's source tables, labelled defects);
  ``python -m hurren_testkit.synthetic``.
- ``samples``: spec-shaped sample records and payloads; ``python -m hurren_testkit.samples lab``.
- ``backlog``: a queued push backlog in one INSERT (the claim test and bench).
- ``demo``: the demo's data and summary (``scripts/demo``); ``python -m hurren_testkit.demo``.

On the path next to ``plugins/`` (pyproject's pytest pythonpath, scripts/demo, scripts/services,
bench/). tests/unit/test_layout.py proves ``plugins/hurren`` and ``dags/`` import nothing from here.
"""
