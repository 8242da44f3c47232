"""Evaluation: generation, text metrics, safety probes, canary exposure, and the gates that judge a run."""
