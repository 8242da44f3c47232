"""tunegate's Prefect flows and the ``tunegate`` command."""

from tasks.offline import apply_offline_environment

apply_offline_environment()
