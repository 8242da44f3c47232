"""The MLflow registry: runs, model versions and aliases, the pyfunc model, merging adapters."""
