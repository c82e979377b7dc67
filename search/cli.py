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

from search.errors import UserError
from search import signals
from search.signals import Terminated
from search.recycle import RestartProcess

COMMANDS = ("search", "worker", "export", "evaluate", "report")
# flag name -> (type, help); the environment variable is the upper-case name.
OPTIONS = {
    "dataset": (str, "tinyimagenet, cifar10, cifar100, mnist, fashion_mnist, digits or folder"),
    "space": (str, "search space: cnn (default), mlp, finetune or autokeras"),
    "trials": (int, "finished (complete or pruned) trials the study should reach "
                    "(default 20; no limit with a BUDGET)"),
    "epochs": (int, "epochs a trial plans (fewer when cut to fit the budget or pruned; default 15)"),
    "budget": (float, "seconds of training: the search then exports and evaluates the best "
                      "(data preparation not counted)"),
    "timeout": (float, "the same as BUDGET (kept for older commands)"),
    "max_epoch_seconds": (float, "prune a trial whose epoch would take longer "
                                 "(default: 20x the median complete trial's, at least 60; 0: no limit)"),
    "image_size": (int, "resize images to this square size (default: the dataset's own)"),
    "storage": (str, "SQLAlchemy URL of the study database (default sqlite in RUNS_DIR)"),
    "study": (str, "study name (default <dataset>-<space>)"),
    "runs_dir": (str, "where databases, checkpoints and exports live (default ./runs)"),
    "data_dir": (str, "where datasets are found, downloaded and cached (default ./data)"),
    "sampler": (str, "tpe (default), random, cmaes or gp"),
    "pruner": (str, "hyperband (default), median, sha or none"),
    "seed": (int, "seed for the sampler and per-trial Keras seeds"),
    "labels": (str, "cifar100 labels: fine (default) or coarse"),
    "folder": (str, "root of a DATASET=folder tree: train/<class>/*, validation/<class>/*"),
    "max_blocks": (int, "cnn: most conv blocks (default 4)"),
    "backbones": (str, "finetune: backbones or families to choose from, comma-separated (default: all)"),
    "weights": (str, "finetune: imagenet (default) or none (random initialisation)"),
    "weights_dir": (str, "finetune: folder of Keras weight files, used instead of downloading"),
    "max_model_size": (int, "autokeras: prune a trial whose model has more parameters, before training"),
    "pretrained": (str, "autokeras: yes (default) or no (leave out AutoKeras's pretrained blocks)"),
    "mlflow_tracking_uri": (str, "MLflow tracking URI (default sqlite in RUNS_DIR)"),
    "workers": (int, "search: run the trials in this many local worker processes (default 1)"),
    "heartbeat": (int, "seconds between a running trial's heartbeats; one silent for 3 is retried (default 10)"),
    "db_retry": (float, "seconds to keep retrying a study database that cannot be reached before stopping "
                        "(default 60)"),
    "report": (str, "report: the HTML file to write (default RUNS_DIR/report.html)"),
    "trials_per_process": (int, "continue in a fresh process after this many trials (default 25, 0: never)"),
}


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, not a usage block
        raise UserError(message)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = _Parser(prog="python -m search", description=__doc__.splitlines()[0])
    parser.add_argument("command", nargs="?", default="search", choices=COMMANDS)
    for name, (kind, help_text) in OPTIONS.items():
        env = os.environ.get(name.upper()) or None
        if env is not None:
            try:
                env = kind(env)
            except ValueError:
                raise UserError(f"{name.upper()}={env!r} is not a valid {kind.__name__}") from None
        parser.add_argument(f"--{name.replace('_', '-')}", type=kind, default=env, help=help_text)
    return parser.parse_args(argv)


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
    except Terminated:
        print("\nterminated (SIGTERM); run the same command again to resume the study", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print("\ninterrupted; run the same command again to resume the study", file=sys.stderr)
        return 130
