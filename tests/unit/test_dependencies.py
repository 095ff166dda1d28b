"""What the server imports is what `pip install .` installs: no runtime import of a
library that only the test extras bring (the README's first command would fail)."""

from __future__ import annotations

import ast
import importlib.metadata
import pathlib
import re
import sys
import tomllib

ROOT = pathlib.Path(__file__).resolve().parents[2]
FIRST_PARTY = {"core", "adapters", "entrypoints"}


def _name(requirement: str) -> str:
    """The normalized distribution name of a requirement (PEP 503)."""
    found = re.match(r"[A-Za-z0-9._-]+", requirement)
    assert found is not None, requirement
    return re.sub(r"[-_.]+", "-", found.group(0)).lower()


def runtime_imports() -> dict[str, set[str]]:
    """Top-level modules imported by the shipped packages -> the files importing them."""
    found: dict[str, set[str]] = {}
    for package in sorted(FIRST_PARTY):
        for path in (ROOT / package).rglob("*.py"):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    top = name.split(".", 1)[0]
                    if top not in FIRST_PARTY and top not in sys.stdlib_module_names:
                        found.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return found


def test_every_runtime_import_is_a_declared_runtime_dependency() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    declared = {_name(r) for r in project["dependencies"]}
    # a dependency's own dependencies are installed with it: accept those too
    installed = set(declared)
    for name in declared:
        for requirement in importlib.metadata.requires(name) or []:
            if "extra ==" not in requirement:
                installed.add(_name(requirement))
    providers = importlib.metadata.packages_distributions()
    missing = {
        module: sorted(files)
        for module, files in runtime_imports().items()
        if not {_name(d) for d in providers.get(module, [module])} & installed
    }
    assert not missing, f"imported at run time but not installed by `pip install .`: {missing}"


def test_the_check_sees_imports() -> None:
    imports = runtime_imports()
    assert "msgspec" in imports
    assert "redis" in imports  # adapters/redis
    assert "os" not in imports  # the standard library is not a dependency
