"""BUDGET: the deadline, trials cut or skipped to fit it, the schedule, the starting portfolio."""

from __future__ import annotations

import math
import re
import statistics
import time
from pathlib import Path

import optuna
import pytest

from imgsearch.trials import budget as budget_module
from imgsearch.trials.budget import Budget, EpochPlan
from imgsearch.command_line.main import main
from imgsearch.trials.callbacks import warmup_cosine
from imgsearch.trials.study import get_space
from imgsearch.storage.urls import default_storage_url
from conftest import GOOD_MLP as GOOD
from conftest import new_search, trial_runs
from imgsearch import records

optuna.logging.set_verbosity(optuna.logging.WARNING)


def test_the_schedule_warms_up_then_anneals_to_zero():
    assert warmup_cosine(0.0, 0.2) == pytest.approx(0.1)
    assert warmup_cosine(0.1, 0.2) == pytest.approx(0.55)
    assert warmup_cosine(0.2, 0.2) == pytest.approx(1.0)
    assert warmup_cosine(0.6, 0.2) == pytest.approx(0.5)
    assert warmup_cosine(1.0, 0.2) == pytest.approx(0.0, abs=1e-12)
    rising = [warmup_cosine(p / 100, 0.2) for p in range(21)]
    falling = [warmup_cosine(p / 100, 0.2) for p in range(20, 101)]
    assert rising == sorted(rising) and falling == sorted(falling, reverse=True)


def test_a_trial_follows_the_schedule_over_its_planned_epochs(tmp_path, digits):
    """The learning rate logged per epoch rises through the warmup, then falls to near zero."""
    search = new_search(tmp_path, digits, pruner=optuna.pruners.NopPruner(), epochs=5)
    study, tracker, objective = search.study, search.tracker, search.objective
    study.enqueue_trial(GOOD)
    study.optimize(objective, n_trials=1)
    run = trial_runs(tracker)[0]
    rates = [m.value for m in tracker.client.get_metric_history(run.info.run_id, "learning_rate")]
    peak = GOOD["learning_rate"]
    assert len(rates) == 5
    # The rate at each epoch's end: past the peak after epoch 1 (warmup is the first 20%), then down.
    assert rates[1:] == sorted(rates[1:], reverse=True) and max(rates) <= peak
    assert rates[-1] < 0.05 * peak


def test_a_trial_running_at_the_deadline_stops_at_its_epoch_end_and_keeps_its_value(tmp_path, digits, monkeypatch):
    """With the projection switched off (as if it had guessed too short), the deadline still holds."""
    monkeypatch.setattr(EpochPlan, "fit_to", lambda *args: None)
    search = new_search(tmp_path, digits, pruner=optuna.pruners.NopPruner(), epochs=500)
    study, tracker, checkpoint, objective = search.study, search.tracker, search.checkpoint, search.objective
    objective.deadline = time.monotonic() + 1.5
    study.enqueue_trial(GOOD)
    study.optimize(objective, n_trials=1)  # the objective alone: the deadline is its rule
    trial = study.trials[0]
    stopped = trial.user_attrs[records.DEADLINE_ATTR]
    assert trial.state == optuna.trial.TrialState.COMPLETE and 1 <= stopped < 500
    assert len(trial.intermediate_values) == stopped
    assert trial.value == pytest.approx(max(trial.intermediate_values.values()))
    assert checkpoint.path(0).is_file()  # the model it reached is kept as the best
    assert trial_runs(tracker)[0].data.tags[records.DEADLINE_ATTR] == str(stopped)


def test_a_trial_that_cannot_finish_in_the_time_left_is_cut_to_fit(tmp_path, digits):
    # The deadline is set from this machine's own times (a fixed one let a fast machine train
    # all 60 epochs in time): the probe's start-up (build, trace, first batch) and a whole
    # epoch, validation and logging included, from the MLflow timestamps of its later epochs
    # (their median). The trial is cut when between a third of its 60 epochs (MIN_EPOCH_SHARE:
    # fewer, and it is skipped at its start) and all of them fit. The deadline leaves room for
    # 40: its first epoch, from which the trial projects, runs slower than the later ones, and
    # a loaded machine may slow it down twice (or speed it up 1.5 times) and still see it cut.
    probe = new_search(tmp_path / "probe", digits, pruner=optuna.pruners.NopPruner(), epochs=5)
    probe.study.enqueue_trial(GOOD)
    probe.study.optimize(probe.objective, n_trials=1)
    stamps = [m.timestamp / 1000 for m in probe.tracker.client.get_metric_history(
        trial_runs(probe.tracker)[0].info.run_id, "val_accuracy")]
    epoch = statistics.median(later - earlier for earlier, later in zip(stamps[1:], stamps[2:]))
    seconds = 1.5 * probe.study.trials[0].user_attrs[records.STARTUP_SECONDS_ATTR] + 40 * epoch
    search = new_search(tmp_path, digits, pruner=optuna.pruners.NopPruner(), epochs=60)
    study, tracker, objective = search.study, search.tracker, search.objective
    deadline_wall = time.time() + seconds  # MLflow stamps metrics with the wall clock
    objective.deadline = time.monotonic() + seconds
    study.enqueue_trial(GOOD)
    study.optimize(objective, n_trials=1)
    trial = study.trials[0]
    assert records.PLANNED_EPOCHS_ATTR in trial.user_attrs, (seconds, trial.state, len(trial.intermediate_values))
    planned = trial.user_attrs[records.PLANNED_EPOCHS_ATTR]
    assert trial.state == optuna.trial.TrialState.COMPLETE and 3 <= planned < 60
    assert records.DEADLINE_ATTR not in trial.user_attrs  # it ended on its own plan
    assert len(trial.intermediate_values) == planned
    # Its last epoch ended by the deadline, give or take one epoch's projection error (the
    # bookkeeping after training, a loaded machine's business, is not the plan's to fit).
    last = tracker.client.get_metric_history(trial_runs(tracker)[0].info.run_id, "val_accuracy")[-1]
    assert last.timestamp / 1000 < deadline_wall + trial.user_attrs[records.EPOCH_SECONDS_ATTR]


def test_a_trial_too_slow_for_the_time_left_is_skipped_within_its_first_epoch(tmp_path, digits):
    search = new_search(tmp_path, digits, pruner=optuna.pruners.NopPruner(), epochs=300)
    study, objective = search.study, search.objective
    objective.deadline = time.monotonic() + 0.5
    study.enqueue_trial({**GOOD, "batch_size": 32})
    study.optimize(objective, n_trials=1)
    trial = study.trials[0]
    assert trial.state == optuna.trial.TrialState.PRUNED and trial.intermediate_values == {}
    assert re.match(r"cannot finish: about \d+ s per epoch, \d+ s of the budget left for 300 epochs$",
                    trial.user_attrs[records.PRUNE_REASON_ATTR])


def test_the_plan_is_cut_to_what_fits_and_never_raised():
    clock = iter([100.0] * 10).__next__
    plan = EpochPlan(total=30, deadline=200.0, clock=clock)
    # 100 s left at 5 s an epoch (5.5 with the margin): 18 of the 30 epochs fit, over the third it needs.
    assert plan.fit_to(epoch=0, epoch_began=100.0, seconds_per_epoch=5.0) is None
    assert plan.total == math.floor(100 / (5.0 * budget_module.EPOCH_MARGIN)) == 18
    assert plan.fit_to(epoch=0, epoch_began=100.0, seconds_per_epoch=1.0) is None and plan.total == 18  # not raised
    # Past the first epoch, what was trained is kept: the plan only shortens, to 2 + 3 epochs here.
    assert plan.fit_to(epoch=2, epoch_began=100.0, seconds_per_epoch=30.0) is None and plan.total == 5
    assert EpochPlan(total=30, deadline=110.0, clock=clock).fit_to(0, 100.0, 5.0).startswith("cannot finish")


def test_the_search_stops_when_no_trial_would_fit_in_what_is_left():
    now = [0.0]
    budget = Budget(100, epochs=9, clock=lambda: now[0])
    study = optuna.create_study(direction="maximize")
    study.add_trial(optuna.trial.create_trial(value=0.5, user_attrs={records.EPOCH_SECONDS_ATTR: 10.0}))

    def objective(trial):
        now[0] += 30  # 70 s left after the first trial, 40 after the second, 10 after the third
        return 0.1

    study.optimize(objective, n_trials=5, callbacks=[budget])
    # The fastest complete trial needs 3 epochs (a third of 9) x 11 s = 33 s: no fourth starts.
    assert budget.ended and len(study.trials) == 1 + 3


def test_budget_search_ends_in_time_exported_and_evaluated(runs_env, capsys):
    """BUDGET alone: trials until the time is spent, none past the deadline by more than an epoch."""
    argv = ["--dataset", "digits", "--space", "mlp", "--epochs", "4", "--budget", "12", "--seed", "0"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    searching = float(re.search(r"time: (\d+) s of the 12 s budget searching, then (\d+) s exporting", out).group(1))
    study = optuna.load_study(study_name="digits-mlp",
                              storage=default_storage_url(Path(runs_env["RUNS_DIR"]) / "optuna.db"))
    assert len(study.trials) >= 2 and "/" not in re.search(r"\| (\S+) done", out).group(1)  # no TRIALS target
    epoch_seconds = max(t.user_attrs.get(records.EPOCH_SECONDS_ATTR, 0) for t in study.trials)
    assert searching <= 12 + epoch_seconds + 1
    assert re.search(r"\d+s, \d+s left", out)  # progress lines show the time left
    assert "exported model:" in out and "evaluation:" in out


def test_timeout_is_the_budget_and_bad_budgets_are_one_line(runs_env, capsys):
    assert main(["--dataset", "digits", "--budget", "0"]) == 2
    assert capsys.readouterr().err.strip() == "error: BUDGET=0: must be more than 0"
    assert main(["--dataset", "digits", "--timeout", "-5"]) == 2
    assert capsys.readouterr().err.strip() == "error: TIMEOUT=-5: must be more than 0"


def test_the_starting_portfolio_is_queued_once(runs_env, capsys):
    """A new study queues every starting configuration; a resumed one queues nothing again."""
    portfolio = get_space("cnn").initial_params((8, 8, 1))
    assert len(portfolio) >= 3 and len({p["family"] for p in portfolio}) == 2
    base = ["--dataset", "digits", "--space", "cnn", "--epochs", "1", "--seed", "0"]
    assert main([*base, "--trials", "1"]) == 0
    assert main([*base, "--trials", "2"]) == 0
    capsys.readouterr()
    study = optuna.load_study(study_name="digits-cnn",
                              storage=default_storage_url(Path(runs_env["RUNS_DIR"]) / "optuna.db"))
    queued = [t.params or t.system_attrs.get("fixed_params") for t in study.trials]
    assert [queued.count(p) for p in portfolio] == [1] * len(portfolio)
    assert [t.params for t in study.trials[:2]] == portfolio[:2]  # run first, in order
