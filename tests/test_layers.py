"""The packages depend one way: search -> spaces -> storage, and search -> storage; inside search,
the command line -> the trial engine -> results -> datasets, settings and records."""

import ast

import pytest

from conftest import REPO

# What each package may import of ours.
ALLOWED = {"storage": {"storage"}, "spaces": {"spaces", "storage"}}


# Inside search, bottom first: what each part may import of search.
SEARCH_LAYERS = ("records", "settings", "datasets", "results", "trials", "command_line")


def imported_modules(path) -> set[str]:
    """Every module ``path`` imports, at module level or inside a function (``from a import b``
    counts as ``a.b``: b may be a module)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def imported_packages(path) -> set[str]:
    return {name.split(".")[0] for name in imported_modules(path)}


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_a_lower_package_imports_no_package_above_it(package):
    ours = {"search", "spaces", "storage"}
    modules = sorted((REPO / package).rglob("*.py"))
    assert modules
    wrong = {str(path.relative_to(REPO)): sorted(imported_packages(path) & ours - ALLOWED[package])
             for path in modules}
    assert {path: names for path, names in wrong.items() if names} == {}


@pytest.mark.parametrize("layer", SEARCH_LAYERS)
def test_inside_search_a_lower_part_imports_no_part_above_it(layer):
    above = set(SEARCH_LAYERS[SEARCH_LAYERS.index(layer) + 1:])
    base = REPO / "search" / layer
    modules = sorted(base.rglob("*.py")) if base.is_dir() else [base.with_suffix(".py")]
    assert modules and all(path.is_file() for path in modules)
    wrong = {str(path.relative_to(REPO)): sorted(name for name in imported_modules(path)
                                                  if name.startswith("search.") and name.split(".")[1] in above)
             for path in modules}
    assert {path: names for path, names in wrong.items() if names} == {}
