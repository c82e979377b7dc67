"""``python -m search [search|worker|export|evaluate|report]``: every setting is a flag or an environment variable.

Each flag ``--image-size`` also reads ``IMAGE_SIZE`` from the environment (the Makefile
exports its variables); a flag wins over the variable. Bad input ends with one line on
stderr and exit status 2; Ctrl-C with 130 and SIGTERM with 143, the running trial closed
as failed.
"""

from __future__ import annotations

import argparse
import os
import sys

from storage.errors import UserError
from storage.urls import check_database_url
from search.inputs import Option, check_study_name, check_tracking_uri
from search import signals
from search.signals import Terminated
from search.recycle import RestartProcess

COMMANDS = ("search", "worker", "export", "evaluate", "report")
# flag name -> Option (type, help, accepted values); the environment variable is the upper-case
# name. The choices of DATASET, SPACE, SAMPLER, PRUNER and WEIGHTS are their registries' keys
# (tests/test_inputs.py checks), written out so that checking them imports no Keras or Optuna.
OPTIONS = {
    "dataset": Option(str, "tinyimagenet, cifar10, cifar100, mnist, fashion_mnist, digits or folder",
                      choices=("tinyimagenet", "cifar10", "cifar100", "mnist", "fashion_mnist", "digits", "folder")),
    "space": Option(str, "search space: cnn (default), mlp, finetune or autokeras",
                    choices=("cnn", "mlp", "finetune", "autokeras")),
    "trials": Option(int, "finished (complete or pruned) trials the study should reach "
                          "(default 20; no limit with a BUDGET)", low=1),
    "epochs": Option(int, "epochs a trial plans (fewer when cut to fit the budget or pruned; default 15)", low=1),
    "budget": Option(float, "seconds of training: the search then exports and evaluates the best "
                            "(data preparation not counted)", above=0),
    "timeout": Option(float, "the same as BUDGET (kept for older commands)", above=0),
    "max_epoch_seconds": Option(float, "prune a trial whose epoch would take longer "
                                       "(default: 20x the median complete trial's, at least 60; 0: no limit)", low=0),
    "image_size": Option(int, "resize images to this square size, 8 to 512 (default: the dataset's own)",
                         low=8, high=512),
    "storage": Option(str, "SQLAlchemy URL of the study database (default sqlite in RUNS_DIR)",
                      check=check_database_url),
    "study": Option(str, "study name: letters, digits, '.', '_', '-' (default <dataset>-<space>)",
                    check=check_study_name),
    "runs_dir": Option(str, "where databases, checkpoints and exports live (default ./runs)"),
    "data_dir": Option(str, "where datasets are found, downloaded and cached (default ./data)"),
    "sampler": Option(str, "tpe (default), random, cmaes or gp", choices=("tpe", "random", "cmaes", "gp")),
    "pruner": Option(str, "hyperband (default), median, sha or none", choices=("hyperband", "median", "sha", "none")),
    "seed": Option(int, "seed for the sampler and per-trial Keras seeds", low=0, high=2**32 - 1),
    "labels": Option(str, "cifar100 labels: fine (default) or coarse", choices=("fine", "coarse")),
    "folder": Option(str, "root of a DATASET=folder tree: train/<class>/*, validation/<class>/*"),
    "max_blocks": Option(int, "cnn: most conv blocks (default 4)", low=1, high=8),
    "backbones": Option(str, "finetune: backbones or families to choose from, comma-separated (default: all)"),
    "weights": Option(str, "finetune: imagenet (default) or none (random initialisation)",
                      choices=("imagenet", "none")),
    "weights_dir": Option(str, "finetune: folder of Keras weight files, used instead of downloading"),
    "max_model_size": Option(int, "autokeras: prune a trial whose model has more parameters, before training",
                             low=1),
    "pretrained": Option(str, "autokeras: yes (default) or no (leave out AutoKeras's pretrained blocks)",
                         choices=("yes", "no")),
    "mlflow_tracking_uri": Option(str, "MLflow tracking URI (default sqlite in RUNS_DIR)", check=check_tracking_uri),
    "workers": Option(int, "search: run the trials in this many local worker processes (default 1)", low=1),
    "heartbeat": Option(int, "seconds between a running trial's heartbeats; one silent for 3 is retried "
                             "(default 10)", low=1),
    "db_retry": Option(float, "seconds to keep retrying a study database that cannot be reached before "
                              "stopping (default 60)", low=0),
    "report": Option(str, "report: the HTML file to write (default RUNS_DIR/report.html)"),
    "trials_per_process": Option(int, "continue in a fresh process after this many trials (default 25, 0: never)",
                                 low=0),
}


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, not a usage block
        raise UserError(message)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = _Parser(prog="python -m search", description=__doc__.splitlines()[0])
    parser.add_argument("command", nargs="?", default="search", choices=COMMANDS)
    for name, option in OPTIONS.items():
        env = os.environ.get(name.upper()) or None
        if env is not None:
            try:
                env = option.kind(env)
            except ValueError:
                raise UserError(f"{name.upper()}={env!r} is not a valid {option.kind.__name__}") from None
        parser.add_argument(f"--{name.replace('_', '-')}", type=option.kind, default=env, help=option.help)
    args = parser.parse_args(argv)
    for name, option in OPTIONS.items():
        if getattr(args, name) is not None:
            option.validate(name, getattr(args, name))
    return args


def main(argv: list[str] | None = None) -> int:
    args = None
    signals.install()
    try:
        args = parse_args(sys.argv[1:] if argv is None else argv)
        from search import commands

        return getattr(commands, args.command)(args)
    except RestartProcess as restart:
        again = (sys.argv[1:] if argv is None else list(argv))
        if restart.budget_left is not None:
            again += ["--budget", str(restart.budget_left)]  # the last --budget wins
        if argv is not None:  # called from Python: carry on in this process
            return main(again)
        sys.stdout.flush()
        sys.stderr.flush()
        os.execv(sys.executable, [sys.executable, "-m", "search", *again])
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # a full disk, wherever a library met it, is the user's to fix: one line too
        from storage.files import disk_full_message, is_disk_full

        if not is_disk_full(exc):
            raise
        print(f"error: {disk_full_message(str(exc).strip().splitlines()[0][:300])}", file=sys.stderr)
        return 2
    except Terminated:
        print("\nterminated (SIGTERM); run the same command again to resume the study", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print("\ninterrupted; run the same command again to resume the study", file=sys.stderr)
        return 130
