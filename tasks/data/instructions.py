"""Instruction records: one plain-text form in the snapshots, rendered per tokenizer for training and prompting.

An instruction/response pair (a JSONL line with ``instruction``, optional ``input``, and ``output``) travels
through ingest, cleaning, dedup, PII scrubbing and the contracts as an ordinary document whose text is

    ### Instruction:
    Route this ticket to a team and give its priority.

    ### Input:
    The KR-Carrier 450 at the Leeds site stops with E214 ...

    ### Response:
    Team: Navigation. Priority: P2.

(the Alpaca layout: readable in a snapshot, and every stage keeps it: cleaning keeps line breaks and one blank
line, the scrubber only replaces spans of the fields). Its ``mime_type`` is ``MIME_TYPE`` so the quality filters
written for prose leave these short records alone.

Training and evaluation render a record the same way for a given tokenizer (``render_example`` /
``render_prompt``): through the tokenizer's chat template when it has one (a pretrained instruct model such
as SmolLM2-Instruct is then trained and asked exactly as it was built to be: user turn = instruction and
input, assistant turn = response), otherwise as the plain layout above, the prompt ending after
``### Response:``. The base model, the candidate and the champion therefore get the same prompts.
"""

from __future__ import annotations

import re
from typing import NamedTuple

MIME_TYPE = "application/x-instruction"
INSTRUCTION, INPUT, RESPONSE = "### Instruction:", "### Input:", "### Response:"
_LAYOUT = re.compile(
    r"\A### Instruction:\n(?P<instruction>.*?)\n*(?:### Input:\n(?P<input>.*?)\n*)?### Response:\n(?P<output>.*)\Z",
    re.DOTALL,
)


class Instruction(NamedTuple):
    instruction: str
    input: str
    output: str

    @property
    def user_turn(self) -> str:
        """What the user asks: the instruction, then the input after a blank line (when there is one)."""
        return self.instruction + (f"\n\n{self.input}" if self.input else "")


def to_text(instruction: str, output: str, input: str = "") -> str:
    """The snapshot text of a record (fields stripped; no Input section when the input is empty)."""
    parts = [f"{INSTRUCTION}\n{instruction.strip()}"]
    if input.strip():
        parts.append(f"{INPUT}\n{input.strip()}")
    parts.append(f"{RESPONSE}\n{output.strip()}")
    return "\n\n".join(parts)


def parse(text: str) -> Instruction | None:
    """The record in ``text``, or None when the text is not in the instruction layout."""
    m = _LAYOUT.match(text.strip())
    if not m:
        return None
    return Instruction(m["instruction"].strip(), (m["input"] or "").strip(), m["output"].strip())


def has_chat_template(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def render_prompt(tokenizer, record: Instruction) -> str:
    """The text a model is asked with: the chat template's user turn and assistant header, or the plain
    layout up to and including ``### Response:`` and its line break."""
    if has_chat_template(tokenizer):
        return tokenizer.apply_chat_template([{"role": "user", "content": record.user_turn}], tokenize=False,
                                             add_generation_prompt=True)
    return to_text(record.instruction, "", record.input).rstrip() + "\n"


def render_example(tokenizer, record: Instruction) -> str:
    """The text a model is trained on: the prompt followed by the response (closed by the chat template's own
    end-of-turn marker when there is one; packing adds the EOS token after every document)."""
    if has_chat_template(tokenizer):
        messages = [{"role": "user", "content": record.user_turn}, {"role": "assistant", "content": record.output}]
        return tokenizer.apply_chat_template(messages, tokenize=False).rstrip("\n")
    return render_prompt(tokenizer, record) + record.output
