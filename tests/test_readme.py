"""The README's commands work as written (issue 12, item 7).

Every command line in the README's code blocks names a make target that exists, or a `tunegate` command and
options that command accepts. The quick start's "your own run" recipe runs verbatim from another folder (the
one placeholder, /path/to/tunegate, is the checkout); `make demo` itself runs verbatim in
tests/test_retrain_e2e.py.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess

from conftest import CORPUS, ROOT, TUNEGATE, readme_commands, seed_prefect_db


GROUPS = {"evalset"}  # commands with subcommands of their own: `tunegate evalset add`


def tunegate_calls(commands: list[str]) -> list[tuple[str, set[str]]]:
    """(subcommand, its --options) of every `tunegate` call in ``commands``; a group's subcommand is named with
    it ("evalset add")."""
    calls = []
    for command in commands:
        for part in command.split("&&"):
            words = part.split()
            for i, word in enumerate(words[:-1]):
                if os.path.basename(word) == "tunegate":
                    sub, rest = words[i + 1], words[i + 2:]
                    if sub in GROUPS and rest:
                        sub, rest = f"{sub} {rest[0]}", rest[1:]
                    calls.append((sub, {w.split("=")[0].strip("[]") for w in rest if w.lstrip("[").startswith("--")}))
    return calls


def test_every_command_in_the_readme_exists_with_the_options_it_is_given():
    commands = readme_commands()
    assert readme_commands("## Quick start")[:2] == ["make demo", "make test"]  # the quick start: two commands
    targets = set(re.findall(r"^([a-z][a-z-]*):", (ROOT / "Makefile").read_text(), re.M))
    for command in commands:
        if command.startswith("make "):
            assert set(command.split()[1:]) <= targets, command
    calls = tunegate_calls(commands)
    assert {"run", "init", "server", "promote", "drift", "evalset add"} <= {sub for sub, _ in calls}
    helps: dict[str, str] = {}
    for sub, options in calls:
        if sub not in helps:
            proc = subprocess.run([str(TUNEGATE), *sub.split(), "--help"], capture_output=True, text=True, timeout=120,
                                  env={**os.environ, "COLUMNS": "200"})
            assert proc.returncode == 0, f"tunegate {sub}: {proc.stderr[-500:]}"
            helps[sub] = proc.stdout
        for option in options:
            assert re.search(rf"{re.escape(option)}\b", helps[sub]), f"tunegate {sub} has no option {option}"


def test_the_quick_start_recipe_for_your_own_run_works_verbatim_from_another_folder(tmp_path):
    """`tunegate init ~/retrain/my.yaml`, then `cd ~/retrain && … tunegate run --config my.yaml --data
    ~/my-documents`, with HOME a fresh folder: the copied config finds its contract, gates, planted-secret
    and base-model files from there. Three documents are too few for the curated contract (at least ten), so
    the run stops there (exit 3), having read the config, checked every file it names and curated the data."""
    recipe = readme_commands("## Quick start")[2:]
    assert [c.split()[:2] for c in recipe] == [[".venv/bin/tunegate", "init"], ["cd", "~/retrain"]], recipe
    home = tmp_path / "home"
    docs = home / "my-documents"
    docs.mkdir(parents=True)
    for name in ("policies/sla.txt", "policies/security.txt"):
        (docs / os.path.basename(name)).write_text((CORPUS / name).read_text())
    (docs / "note.txt").write_text("The depot in Leeds ships replacement wheels for the K-20 on Tuesdays.")
    state = tmp_path / "state"
    seed_prefect_db(state)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_API", "MLFLOW_TRACKING", "MAKE"))}
    env.update(HOME=str(home), TUNEGATE_HOME=str(state))
    script = "set -e\n" + "\n".join(c.replace("/path/to/tunegate", shlex.quote(str(ROOT))) for c in recipe)
    proc = subprocess.run(["bash", "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert (home / "retrain" / "my.yaml").is_file(), proc.stderr
    last = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    assert proc.returncode == 3 and last.startswith("blocked before training: curated contract"), proc.stdout + proc.stderr
    assert "file not found" not in proc.stderr and "no such file" not in proc.stderr
