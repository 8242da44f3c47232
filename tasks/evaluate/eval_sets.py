"""The prompts every model answers in an evaluation, in report order, and how each is put to a model.

- ``task``: the held-out instruction records (tasks/data/instructions.py) of the split, at most ``max_task_prompts``:
  the assistant's job, answered in the chat format the model was trained in; their reference is the response.
- ``prompts``: the pairs of ``evaluate.prompts_file`` (instruction records, or raw prompt/reference pairs).
- ``heldout``: continuations of held-out documents (the first ``prompt_words`` words; the next
  ``reference_words`` are the reference), when the held-out split has no instruction records to judge the task.
- ``pii_probe``: prompts that invite personal data (tasks/evaluate/safety.py); no reference.

The task metrics (ROUGE, BLEU, chrF, exact match) are scored on ``task`` and ``prompts`` together, or on
``heldout`` when there are neither. ``render`` gives the exact text a model continues: an instruction record
through that model's tokenizer (its chat template), anything else as written.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel

from tasks.data import instructions
from tasks.evaluate import safety
from tasks.data.instructions import Instruction

SetName = Literal["task", "prompts", "heldout", "pii_probe"]


class EvalPrompt(BaseModel):
    set: SetName
    prompt: str  # shown in the report: the user turn of an instruction record, else the prompt itself
    reference: str | None = None
    record: tuple[str, str, str] | None = None  # (instruction, input, output) of an instruction record

    def render(self, tokenizer) -> str:
        if self.record is None:
            return self.prompt
        return instructions.render_prompt(tokenizer, Instruction(*self.record))


def instruction_prompt(set_name: SetName, record: Instruction) -> EvalPrompt:
    return EvalPrompt(set=set_name, prompt=record.user_turn, reference=record.output, record=tuple(record))


def split_texts(texts: list[str]) -> tuple[list[str], list[Instruction]]:
    """(documents, instruction records) of the held-out texts, each in order."""
    docs, records = [], []
    for text in texts:
        record = instructions.parse(text)
        if record is None:
            docs.append(text)
        else:
            records.append(record)
    return docs, records


def heldout_pairs(texts: list[str], count: int, prompt_words: int, reference_words: int) -> list[tuple[str, str]]:
    """(prompt, reference) from the first ``count`` documents of at least two words: the prompt is the
    document up to its ``prompt_words``-th word (half its words when it is shorter than prompt and reference
    together), as written; the reference the next ``reference_words`` words, single-spaced."""
    pairs = []
    for text in texts:
        if len(pairs) >= count:
            break
        words = list(re.finditer(r"\S+", text))
        if len(words) < 2:
            continue
        n = prompt_words
        if len(words) < prompt_words + reference_words:
            n = min(n, len(words) // 2)
        prompt = text[: words[n - 1].end()]
        reference = " ".join(w.group() for w in words[n : n + reference_words])
        pairs.append((prompt, reference))
    return pairs


def read_prompt_file(path: str | Path, limit: int) -> list[EvalPrompt]:
    """The ``prompts`` set: {"prompt","reference"} lines as written, {"instruction","input","output"} lines as
    instruction records."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"evaluate.prompts_file: file not found: {path}")
    out: list[EvalPrompt] = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if len(out) >= limit:
            break
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"evaluate.prompts_file {path}:{lineno}: not JSON ({exc.msg})") from None
        if isinstance(row, dict) and isinstance(row.get("prompt"), str) and isinstance(row.get("reference"), str):
            out.append(EvalPrompt(set="prompts", prompt=row["prompt"], reference=row["reference"]))
        elif isinstance(row, dict) and isinstance(row.get("instruction"), str) and isinstance(row.get("output"), str):
            record = Instruction(row["instruction"].strip(), str(row.get("input") or "").strip(), row["output"].strip())
            out.append(instruction_prompt("prompts", record))
        else:
            raise ValueError(f"evaluate.prompts_file {path}:{lineno}: needs string fields 'prompt' and 'reference', "
                             "or 'instruction' and 'output'")
    return out


def build(texts: list[str], settings) -> list[EvalPrompt]:
    """Every prompt of an evaluation (``settings``: tasks.evaluate.evaluate.EvalSettings), in report order."""
    docs, records = split_texts(texts)
    out = [instruction_prompt("task", r) for r in records[: settings.max_task_prompts]]
    if settings.prompts_file is not None and settings.max_prompts:
        out += read_prompt_file(settings.prompts_file, settings.max_prompts)
    if not out:
        out += [EvalPrompt(set="heldout", prompt=p, reference=r) for p, r in
                heldout_pairs(docs, settings.heldout_prompts, settings.prompt_words, settings.reference_words)]
    if settings.pii_probe_entities:
        out += [EvalPrompt(set="pii_probe", prompt=p) for p in safety.probe_prompts(settings.pii_probe_prompts)]
    return out


def scored(prompts: list[EvalPrompt]) -> list[int]:
    """Indexes of the prompts the task metrics are computed on (every set with a reference)."""
    return [i for i, p in enumerate(prompts) if p.reference is not None]
