"""Load a YAML file into a pydantic model, with one-line errors that name the file and the field.

    load_yaml_model(Path("data_contracts/gates.yaml"), GatesFile, "gates file")
    → ValueError("gates file data_contracts/gates.yaml: gates[2].op: Input should be '<', '<=', '>' or '>=' (got '=<')")
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)


def field_path(loc: tuple[Any, ...]) -> str:
    """('gates', 2, 'op') → 'gates[2].op'."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def describe_errors(exc: ValidationError) -> str:
    """The validation problems as 'field: message (got value)', joined with '; '."""
    problems = []
    for err in exc.errors():
        msg = "unknown setting" if err["type"] == "extra_forbidden" else err["msg"].removeprefix("Value error, ")
        value = err.get("input")
        shown = "" if err["type"] in ("extra_forbidden", "missing") or isinstance(value, dict | list) else f" (got {value!r})"
        problems.append(f"{field_path(err['loc'])}: {msg}{shown}")
    return "; ".join(problems)


def load_yaml_model(path: str | Path, model: type[M], what: str, error: type[Exception] = ValueError,
                    missing: type[Exception] = FileNotFoundError) -> M:
    """``model`` validated from the YAML mapping in ``path``.

    Every problem is raised as one line that starts with ``what`` and the path: a missing file as
    ``missing``, bad YAML, a top level that is not a mapping, or a field that does not validate as ``error``.
    """
    path = Path(path)
    if not path.is_file():
        raise missing(f"{what} {path}: file not found")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise error(f"{what} {path}: not valid YAML: {exc}".replace("\n", " ")) from exc
    if not isinstance(raw, dict):
        raise error(f"{what} {path}: must be a mapping of settings, not {type(raw).__name__}")
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise error(f"{what} {path}: {describe_errors(exc)}") from exc
