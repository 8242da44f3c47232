"""The training program: one readable recipe (PEFT under DeepSpeed), run as its own process.

``python -m tasks.train.trainer JOB.json`` trains one process of a job; the Prefect task in tasks/train/train.py
launches it (under torchrun for several processes) and reads what it writes into the run folder.
"""
