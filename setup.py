"""The build step pyproject.toml cannot express: the project's own files that the code reads at run time
(data contracts, DeepSpeed templates, configs, prefect.yaml; ``SHIPPED`` in tasks/core/paths.py) stay at the
top of the checkout, and a wheel carries a copy of them inside the package, in tasks/core/project_files/ with
the same layout, where tasks.core.paths finds them. An editable install reads the checkout's own."""

from __future__ import annotations

import ast
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
PATHS = HERE / "tasks" / "core" / "paths.py"


def _literal(name: str):
    """The value of ``name = <literal>`` in tasks/core/paths.py (read, not imported: nothing is installed yet)."""
    for node in ast.parse(PATHS.read_text()).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == name for t in node.targets):
            return ast.literal_eval(node.value)
    raise RuntimeError(f"{PATHS}: no {name} = ... literal")


def shipped_files() -> list[str]:
    """Every file under the SHIPPED entries, relative to the checkout (caches and bytecode left out)."""
    out = []
    for entry in _literal("SHIPPED"):
        path = HERE / entry
        if path.is_file():
            out.append(entry)
        elif path.is_dir():
            out += sorted(str(p.relative_to(HERE)) for p in path.rglob("*")
                          if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc")
        else:
            raise RuntimeError(f"tasks/core/paths.py SHIPPED names {entry}, which is not in {HERE}")
    return out


class build_py_with_project_files(build_py):
    """build_py, then the SHIPPED files copied into tasks/core/<SHIPPED_FOLDER>/ of the build."""

    def run(self) -> None:
        super().run()
        if self.editable_mode:
            return
        for target, source in self.project_file_mapping().items():
            self.mkpath(str(Path(target).parent))
            self.copy_file(source, target)

    def project_file_mapping(self) -> dict[str, str]:
        folder = Path(self.build_lib, "tasks", "core", _literal("SHIPPED_FOLDER"))
        return {str(folder / rel): str(HERE / rel) for rel in shipped_files()}

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        outputs = super().get_outputs(include_bytecode)
        return outputs if self.editable_mode else outputs + list(self.project_file_mapping())


setup(cmdclass={"build_py": build_py_with_project_files})
