"""The packages depend one way: search -> spaces -> storage, and search -> storage."""

import ast

import pytest

from conftest import REPO

# What each package may import of ours.
ALLOWED = {"storage": {"storage"}, "spaces": {"spaces", "storage"}}


def imported_packages(path) -> set[str]:
    """Top-level names of every module ``path`` imports, at module level or inside a function."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_a_lower_package_imports_no_package_above_it(package):
    ours = {"search", "spaces", "storage"}
    modules = sorted((REPO / package).rglob("*.py"))
    assert modules
    wrong = {str(path.relative_to(REPO)): sorted(imported_packages(path) & ours - ALLOWED[package])
             for path in modules}
    assert {path: names for path, names in wrong.items() if names} == {}
