"""search/settings.py is the one declaration of every setting: the parser, the spaces, the
study's defaults, the Makefile and the README's table all follow it."""

from __future__ import annotations

import dataclasses
import re
import subprocess

import pytest

from conftest import REPO
from imgsearch.command_line.main import parse_args
from imgsearch.settings import BY_NAME, SETTINGS, STUDY_KEYS, markdown_table, space_defaults
from imgsearch.storage.errors import UserError


def test_the_readme_table_is_the_declaration():
    assert markdown_table() in (REPO / "README.md").read_text(), "run `python -m imgsearch.settings` for the table"


def test_every_setting_is_a_flag_and_a_variable_checked_the_same_way(monkeypatch):
    for setting in SETTINGS:
        monkeypatch.delenv(setting.env, raising=False)
    args = parse_args(["search"])
    for s in SETTINGS:  # what a study records, a space's options, conditional defaults: None, for the record to fill
        assert getattr(args, s.name) == (s.default if s.unset_is_default else None), s.name
    assert args.runs_dir == "runs" and args.heartbeat == 10 and args.trials is None and args.space is None
    monkeypatch.setenv("MAX_BLOCKS", "3")
    assert parse_args(["search"]).max_blocks == 3 and parse_args(["search", "--max-blocks", "5"]).max_blocks == 5
    monkeypatch.setenv("MAX_BLOCKS", "9")
    with pytest.raises(UserError, match="MAX_BLOCKS=9: must be from 1 to 8"):
        parse_args(["search"])
    with pytest.raises(UserError, match="MAX_BLOCKS=0: must be from 1 to 8"):
        parse_args(["search", "--max-blocks", "0"])


def test_each_space_option_is_a_field_of_its_space_and_takes_its_declared_default():
    from imgsearch.trials.study import get_space
    from imgsearch.spaces import SPACES

    for name, cls in SPACES.items():
        assert [f.name for f in dataclasses.fields(cls)] == list(space_defaults(name)), name
        assert all(f.default is dataclasses.MISSING for f in dataclasses.fields(cls)), f"{name}: a second default"
    assert get_space("cnn").max_blocks == BY_NAME["max_blocks"].default
    assert get_space("finetune", backbones="mobilenet_0.25").weights == BY_NAME["weights"].default


def test_the_study_and_the_spaces_are_keyed_by_the_settings_choices():
    """The light names (search/choices.py, spaces/catalog.py) and the tables they key agree."""
    from imgsearch.choices import PRUNERS as PRUNER_NAMES, SAMPLERS as SAMPLER_NAMES
    from imgsearch.trials.study import PRUNERS, SAMPLERS
    from imgsearch.spaces import SPACES

    assert tuple(SAMPLERS) == SAMPLER_NAMES and tuple(PRUNERS) == PRUNER_NAMES
    assert BY_NAME["space"].choices == tuple(SPACES)
    assert set(STUDY_KEYS) == {"dataset", "space", "epochs", "image_size", "labels", "folder", "sampler",
                               "pruner", "explore_images", "seed"}


def test_make_passes_its_command_line_on_with_no_list_of_settings(tmp_path):
    rules = [line for line in (REPO / "Makefile").read_text().splitlines() if not line.startswith("#")]
    named = {s.env for s in SETTINGS if any(re.search(rf"\b{s.env}\b", line) for line in rules)}
    assert not named  # neither exported one by one nor given a default there
    runs = tmp_path / "elsewhere"
    (runs / "exports").mkdir(parents=True)
    (runs / ".imgsearch-runs").touch()  # a runs folder this project made: make clean deletes only such a one
    done = subprocess.run(["make", "--no-print-directory", "clean", f"RUNS_DIR={runs}"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert not runs.exists()
