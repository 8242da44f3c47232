"""Instruction records in the training stream: rendered for the tokenizer, the loss on the response only."""

from __future__ import annotations

import numpy as np

from tasks.data import instructions
from tasks.train.dataset import encode_for_training, pack, pack_masks
from tasks.train.trainer.recipe import labels_for


def _chat_tokenizer():
    from tasks.train.tokenizer import bpe_tokenizer

    texts = ["Route this ticket. Team: Power. Priority: P1. The dock is dead. A plain document about docks."] * 4
    fast = bpe_tokenizer(texts, vocab_size=300, specials=("<|im_start|>", "<|im_end|>"), bos="<|im_start|>",
                         eos="<|im_end|>", pad=None)
    fast.chat_template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
                          "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    return fast


def test_the_response_alone_counts_in_the_loss_of_an_instruction_record():
    tok = _chat_tokenizer()
    record = instructions.to_text("Route this ticket.", "Team: Power. Priority: P1.", "The dock is dead.")
    ids, masks = encode_for_training(tok, [record, "A plain document about docks."], completion_only=True)
    prompt = tok(instructions.render_prompt(tok, instructions.parse(record)), add_special_tokens=False)["input_ids"]
    assert ids[0][: len(prompt)] == prompt and masks[0] == [0] * len(prompt) + [1] * (len(ids[0]) - len(prompt))
    assert tok.decode([t for t, m in zip(ids[0], masks[0]) if m]) == "Team: Power. Priority: P1.<|im_end|>"
    assert masks[1] == [1] * len(ids[1])  # a document: every token
    everything = encode_for_training(tok, [record], completion_only=False)[1]
    assert everything[0] == [1] * len(ids[0])

    # packed side by side: the EOS after each text counts; labels are -100 where the mask is 0
    blocks, packed = pack(ids, tok.eos_token_id, 8), pack_masks(masks, 8)
    assert blocks.shape == packed.shape
    flat = [m for mm in masks for m in mm + [1]]
    assert packed.reshape(-1).tolist() == flat[: packed.size]
    import torch

    batch = torch.from_numpy(blocks[[0, 1]].astype(np.int64))
    labels = labels_for(batch, packed, np.array([0, 1]))
    assert (labels[torch.from_numpy(packed[[0, 1]] == 0)] == -100).all()
    assert torch.equal(labels[torch.from_numpy(packed[[0, 1]] == 1)], batch[torch.from_numpy(packed[[0, 1]] == 1)])
    assert labels_for(batch, None, np.array([0, 1])) is batch
