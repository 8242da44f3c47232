"""tunegate's reusable pipeline steps.

Each module holds plain functions that do one stage's work on a batch (testable without Prefect) and a
thin Prefect ``@task`` wrapper. Importing this package makes the process safe to run offline.
"""

from tasks.core.offline import apply_offline_environment

apply_offline_environment()
