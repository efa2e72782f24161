"""hurren: the lab/exam report pipeline for the regional mutual-recognition programme.

The library behind the DAGs in ``dags/``: importable and testable without a running Airflow.
"""
