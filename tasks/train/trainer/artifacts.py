"""What training leaves in ``out_dir/adapter``: a PEFT adapter folder, or (method full) a whole HF model folder.

Both carry the tokenizer. ``is_full_model`` tells readers (evaluation, registry) which of the two a folder is.
"""

from __future__ import annotations

from pathlib import Path


def is_full_model(folder: str | Path) -> bool:
    """True for a complete Hugging Face model folder (config.json, no adapter_config.json); False for an adapter."""
    folder = Path(folder)
    return (folder / "config.json").is_file() and not (folder / "adapter_config.json").is_file()


def save_trained(engine, tokenizer_path: str, folder: Path, rank: int) -> None:
    """The trained weights as a PEFT adapter folder (or a full model folder), plus the tokenizer.

    Under ZeRO-3 the weights are partitioned across processes: they are gathered first (the trainable ones
    for an adapter; every weight, layer by layer onto rank 0, for a full model), or the files come out empty.
    """
    import deepspeed
    from peft import PeftModel
    from transformers import AutoTokenizer

    model = engine.module
    zero3 = engine.zero_optimization_stage() == 3
    folder = Path(folder)
    if not isinstance(model, PeftModel):
        model.config.use_cache = True  # off for training only; generation wants it
        state = engine._zero3_consolidated_16bit_state_dict() if zero3 else None  # collective: every rank
        if rank == 0:
            model.save_pretrained(str(folder), state_dict=state)
    elif zero3:
        params = [p for p in model.parameters() if p.requires_grad]
        with deepspeed.zero.GatheredParameters(params, modifier_rank=None):
            if rank == 0:
                model.save_pretrained(str(folder))
    elif rank == 0:
        model.save_pretrained(str(folder))
    if rank == 0:
        AutoTokenizer.from_pretrained(tokenizer_path).save_pretrained(str(folder))
