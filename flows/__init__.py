"""tunegate's Prefect flows and the ``tunegate`` command."""

from tasks.core.offline import apply_offline_environment

apply_offline_environment()
