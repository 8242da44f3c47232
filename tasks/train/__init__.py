"""Training: tokenizer, base model, packed dataset, canaries, and the DeepSpeed trainer and its launcher."""
