"""``imgsearch [search|worker|export|evaluate|predict|report|...]``: every setting is a flag or a variable.

The settings are declared in ``search/settings.py``. Each flag ``--image-size`` also reads
``IMAGE_SIZE`` from the environment (make passes its command line's variables on); a flag
wins over the variable. Bad input ends with one line on stderr and exit status 2; Ctrl-C
with 130 and SIGTERM with 143, the running trial closed as failed.
"""

from __future__ import annotations

import argparse
import os
import sys

from imgsearch.records import LOCAL_WORKER
from imgsearch.storage.errors import UserError
from imgsearch.settings import COMMAND_HELP, COMMANDS, SETTINGS, TRAINING, Settings, help_text, misspelt, resolve
from imgsearch.trials import signals
from imgsearch.trials.signals import Terminated
from imgsearch.trials.process_restart import RestartProcess


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, not a usage block
        raise UserError(message)


def parse_args(argv: list[str]) -> Settings:
    """The command and every setting (``search.settings.resolve``, as the Python API takes them)."""
    commands = "\n".join(f"  {name:<10} {COMMAND_HELP[name]}" for name in COMMANDS)
    parser = _Parser(prog="imgsearch", formatter_class=argparse.RawDescriptionHelpFormatter,
                     description="AutoML search for image classifiers: an Optuna study over Keras models, every trial "
                                 f"an MLflow run.\n\ncommands:\n{commands}",
                     epilog="Every flag is also an environment variable (--image-size: IMAGE_SIZE); a flag wins. "
                            "Bad input stops with one error line and exit status 2.")
    parser.add_argument("command", nargs="?", default="search", choices=COMMANDS, help="what to do (above)")
    for setting in SETTINGS:
        text = os.environ.get(setting.env) or None
        parser.add_argument(setting.flag, type=setting.kind, default=setting.parse(text) if text else None,
                            help=help_text(setting))
    parsed = vars(parser.parse_args(argv))
    command = parsed.pop("command")
    args = resolve({name: value for name, value in parsed.items() if value is not None})
    args.command = command
    return args


def command_function(name: str):
    """What runs command ``name`` (imported here, after the settings are checked)."""
    from imgsearch.command_line import commands, dashboards

    return {"search": commands.search, "worker": commands.worker, "export": commands.export,
            "evaluate": commands.evaluate, "predict": commands.predict, "report": commands.report,
            "clean": commands.clean, "dashboard": dashboards.dashboard, "mlflow": dashboards.mlflow}[name]


def main(argv: list[str] | None = None) -> int:
    args = None
    signals.install()  # for the process's life: the command line is the process
    try:
        if not os.environ.get(LOCAL_WORKER):  # a local worker's search has said it
            for line in misspelt(dict(os.environ)):
                print(f"warning: {line}", file=sys.stderr, flush=True)
        args = parse_args(sys.argv[1:] if argv is None else argv)
        command_function(args.command)(args)
        return 0
    except RestartProcess as restart:
        from imgsearch.command_line.commands import BUDGET_TOTAL

        again = (sys.argv[1:] if argv is None else list(argv))
        began = BUDGET_TOTAL not in os.environ
        if restart.budget_left is not None:
            again += ["--budget", str(restart.budget_left)]  # the last --budget wins
            os.environ.setdefault(BUDGET_TOTAL, str(restart.budget_total))
        if argv is not None:  # called from Python: carry on in this process
            try:
                return main(again)
            finally:
                if began:
                    os.environ.pop(BUDGET_TOTAL, None)
        sys.stdout.flush()
        sys.stderr.flush()
        os.execv(sys.executable, [sys.executable, "-m", "imgsearch", *again])
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # a full disk, wherever a library met it, is the user's to fix: one line too
        from imgsearch.storage.files import disk_full_message, is_disk_full

        if not is_disk_full(exc):
            raise
        print(f"error: {disk_full_message(str(exc).strip().splitlines()[0][:300])}", file=sys.stderr)
        return 2
    except Terminated:
        print(f"\nterminated (SIGTERM){_resume_hint(args)}", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print(f"\ninterrupted{_resume_hint(args)}", file=sys.stderr)
        return 130


def _resume_hint(args: Settings | None) -> str:
    training = args is None or args.command in TRAINING
    return "; run the same command again to resume the study" if training else ""
