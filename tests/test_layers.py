"""The packages depend one way: search -> spaces -> storage, and search -> storage; inside search,
the Python API -> the command line's commands -> results (export, evaluate, report) -> the trials
(engine, training, tracking) -> datasets, settings, figures, the ranking rule and records.

The three folders are one import name, ``imgsearch`` (search/ is ``imgsearch``, spaces/ and
storage/ are ``imgsearch.spaces`` and ``imgsearch.storage``): pyproject.toml maps them."""

import ast
import tomllib

import pytest

from conftest import REPO

# Where each imgsearch subpackage's folder is (the rest of imgsearch is search/).
FOLDERS = {"imgsearch.spaces": "spaces", "imgsearch.storage": "storage"}

# What each package may import of ours.
ALLOWED = {"storage": {"storage"}, "spaces": {"spaces", "storage"}}


# Inside search, bottom first: what each part may import of search.
SEARCH_LAYERS = ("records", "choices", "ranking", "figures", "settings", "datasets", "trials", "results",
                 "command_line", "api")


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


def folder_of(module: str) -> str | None:
    """The folder of ours that ``module`` lives in (search, spaces or storage), None if not ours."""
    parts = module.split(".")
    if parts[0] != "imgsearch":
        return None
    return FOLDERS.get(".".join(parts[:2]), "search")


def imported_packages(path) -> set[str]:
    return {folder_of(name) for name in imported_modules(path)} - {None}


def python_files():
    return [path for folder in ("search", "spaces", "storage", "tests", "benchmarks")
            for path in sorted((REPO / folder).rglob("*.py"))]


def test_nothing_imports_the_folders_by_their_own_names():
    """``import search`` would load a second copy of a module under another name (and fails
    where the project is installed, which puts only ``imgsearch`` on the path)."""
    wrong = {str(path.relative_to(REPO)): sorted(name for name in imported_modules(path)
                                                  if name.split(".")[0] in ("search", "spaces", "storage"))
             for path in python_files()}
    assert {path: names for path, names in wrong.items() if names} == {}


def test_the_installed_packages_are_every_folder_of_ours():
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    mapping = config["package-dir"]
    assert mapping == {"imgsearch": "search", **FOLDERS}
    folders = {path.parent.relative_to(REPO).as_posix() for folder in set(mapping.values())
               for path in (REPO / folder).rglob("__init__.py")}
    installed = set()
    for package in config["packages"]:
        parent = max((name for name in mapping if package == name or package.startswith(name + ".")), key=len)
        installed.add("/".join([mapping[parent], *package[len(parent):].split(".")[1:]]))
    assert installed == folders


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_a_lower_package_imports_no_package_above_it(package):
    modules = sorted((REPO / package).rglob("*.py"))
    assert modules
    wrong = {str(path.relative_to(REPO)): sorted(imported_packages(path) - ALLOWED[package])
             for path in modules}
    assert {path: names for path, names in wrong.items() if names} == {}


@pytest.mark.parametrize("layer", SEARCH_LAYERS)
def test_inside_search_a_lower_part_imports_no_part_above_it(layer):
    above = set(SEARCH_LAYERS[SEARCH_LAYERS.index(layer) + 1:])
    base = REPO / "search" / layer
    modules = sorted(base.rglob("*.py")) if base.is_dir() else [base.with_suffix(".py")]
    assert modules and all(path.is_file() for path in modules)
    wrong = {str(path.relative_to(REPO)): sorted(name for name in imported_modules(path)
                                                  if folder_of(name) == "search" and name.split(".")[1] in above)
             for path in modules}
    assert {path: names for path, names in wrong.items() if names} == {}


def test_no_product_module_imports_a_librarys_private_module():
    """Private names of libraries (``keras_tuner.src``, ``optuna.storages._cached_storage``) are
    used through ``storage/compat.py`` only, where ``tests/test_compat.py`` checks them."""
    def private(name: str) -> bool:
        parts = name.split(".")
        return parts[0] != "imgsearch" and any(p == "src" or p.startswith("_") for p in parts[1:-1] or parts[1:])

    wrong = {str(path.relative_to(REPO)): sorted(filter(private, imported_modules(path)))
             for folder in ("search", "spaces", "storage") for path in sorted((REPO / folder).rglob("*.py"))
             if path.name != "compat.py"}
    assert {path: names for path, names in wrong.items() if names} == {}
