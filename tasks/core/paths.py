"""Where the project's own files are: the data contracts, the DeepSpeed templates, the configs and prefect.yaml.

In a checkout (and an editable install of one) they are the checkout's top-level folders. An installed wheel
carries a copy of them, with the same layout, inside this package (``tasks/core/project_files/``; setup.py's
build step copies the entries of ``SHIPPED`` there). ``PROJECT_ROOT`` is whichever of the two this code runs
from, so ``PROJECT_ROOT / "data_contracts/raw.json"`` names the same file either way. Every module that reads
one of these files starts here instead of counting parent folders itself.

A relative path in a config is relative to the config's folder; when nothing is there and the path names one
of the files tunegate ships (``data_contracts/raw.json``, ``../data_contracts/gates.yaml``), the project's own
copy is used (``resolve_relative``), so a config outside the checkout still finds them.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

# what a wheel ships, relative to the checkout (setup.py reads this tuple; keep it a literal)
SHIPPED = ("data_contracts", "infra/deepspeed", "configs", "prefect.yaml")
SHIPPED_FOLDER = "project_files"  # where a wheel keeps them, inside this package

CHECKOUT = Path(__file__).resolve().parents[2]  # tasks/core/paths.py -> the checkout, when there is one


def is_checkout(folder: Path) -> bool:
    return (folder / "pyproject.toml").is_file() and (folder / "data_contracts").is_dir()


def shipped_root() -> Path:
    """The copy inside an installed wheel (absent in a checkout)."""
    return Path(str(resources.files(__package__) / SHIPPED_FOLDER))


def find_project_root() -> Path:
    """The checkout this code is in, else the copy an installed wheel carries; if neither is there, the
    checkout's path (a lookup then fails naming a file under it)."""
    if is_checkout(CHECKOUT):
        return CHECKOUT
    shipped = shipped_root()
    return shipped if shipped.is_dir() else CHECKOUT


PROJECT_ROOT = find_project_root()
IN_CHECKOUT = PROJECT_ROOT == CHECKOUT
DATA_CONTRACTS = PROJECT_ROOT / "data_contracts"
DEEPSPEED_TEMPLATES = PROJECT_ROOT / "infra" / "deepspeed"
CONFIGS = PROJECT_ROOT / "configs"
DEMO_CONFIG = CONFIGS / "demo.yaml"
PREFECT_YAML = PROJECT_ROOT / "prefect.yaml"


def project_file(value: Path | str) -> Path | None:
    """The project's own file that the relative path ``value`` names, whatever folder it was relative to:
    ``data_contracts/gates.yaml`` and ``../data_contracts/gates.yaml`` both give PROJECT_ROOT's gates.yaml.
    None when ``value`` is absolute, is not under one of the ``SHIPPED`` entries or no such file exists."""
    value = Path(value)
    if value.is_absolute():
        return None
    parts = value.parts
    while parts and parts[0] in (".", ".."):
        parts = parts[1:]
    if ".." in parts:
        return None
    inner = Path(*parts)
    if not any(inner == Path(s) or Path(s) in inner.parents for s in SHIPPED):
        return None
    found = PROJECT_ROOT / inner
    return found if found.exists() else None


def resolve_relative(base: Path, value: Path) -> Path:
    """``value`` (relative) resolved against the folder ``base``; when nothing is there, the project's own copy
    of the file it names (``project_file``); else the path under ``base``, for an error to name."""
    resolved = (base / value).resolve()
    if resolved.exists():
        return resolved
    return project_file(value) or resolved
