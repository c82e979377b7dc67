"""Real trials on real data: pruning, NaN failures, MLflow nesting, best-model checkpoints."""

from __future__ import annotations

import optuna
import pytest
from mlflow.tracking import MlflowClient

from conftest import GOOD_MLP as GOOD
from conftest import new_search, trial_runs
from imgsearch import records
from imgsearch.results import registry
from imgsearch.trials.tracking import Tracker
from imgsearch.storage.compat import storage_of
from imgsearch.storage.reconnect import DatabaseLost
from imgsearch.trials import objective as objective_module
from imgsearch.trials.budget import epoch_limit

optuna.logging.set_verbosity(optuna.logging.WARNING)

BAD = {**GOOD, "optimizer": "sgd", "learning_rate": 1e-4, "momentum": 0.8, "units": 64, "batch_size": 256}
EXPLODING = {**GOOD, "optimizer": "sgd", "learning_rate": 1e8, "momentum": 0.99, "layers": 3, "units": 1024}


def test_median_pruner_prunes_a_bad_trial(tmp_path, digits):
    search = new_search(tmp_path, digits, pruner=optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=0),
                        trials=2)
    study, tracker = search.study, search.tracker
    study.enqueue_trial(GOOD)
    study.enqueue_trial(BAD)
    search.run()
    good, bad = study.trials
    assert good.state == optuna.trial.TrialState.COMPLETE and good.value > 0.8
    assert bad.state == optuna.trial.TrialState.PRUNED
    assert max(bad.intermediate_values) < 2  # stopped before the last epoch
    runs = trial_runs(tracker)
    assert runs[1].info.status == "KILLED" and runs[1].data.tags["optuna.state"] == "PRUNED"
    assert runs[0].info.status == "FINISHED" and runs[0].data.tags["optuna.state"] == "COMPLETE"
    step = max(bad.intermediate_values)
    reason = (f"by median after epoch {step + 1} at {bad.intermediate_values[step]:.4f} "
              f"(the best other trial had {good.intermediate_values[step]:.4f} there)")
    assert bad.user_attrs[records.PRUNE_REASON_ATTR] == runs[1].data.tags[records.PRUNE_REASON_ATTR] == reason


def test_a_trial_too_slow_for_max_epoch_seconds_is_pruned_within_its_first_epoch(tmp_path, digits):
    search = new_search(tmp_path, digits, pruner=optuna.pruners.NopPruner(), max_epoch_seconds=1e-6, trials=1)
    study, tracker = search.study, search.tracker
    study.enqueue_trial(GOOD)  # 41 batches an epoch
    search.run()
    trial = study.trials[0]
    assert trial.state == optuna.trial.TrialState.PRUNED
    assert trial.intermediate_values == {}  # stopped inside epoch 1, before its validation
    assert trial.user_attrs[records.PRUNE_REASON_ATTR].startswith("too slow: its first batch alone took ")
    assert trial.user_attrs[records.PRUNE_REASON_ATTR].endswith("(MAX_EPOCH_SECONDS=1e-06)")
    assert trial_runs(tracker)[0].data.tags["optuna.state"] == "PRUNED"


def test_the_epoch_timer_projects_an_epoch_from_its_batches_after_the_first(monkeypatch):
    from imgsearch.trials import training

    clock = iter([0.0, 5.0, 6.0, 7.0, 8.0, 9.0])  # epoch begins; a 5 s first batch; then 1 s a batch
    monkeypatch.setattr(training.time, "perf_counter", lambda: next(clock))
    timer = training.EpochTimer(max_seconds=50, why="a test")
    timer.set_params({"steps": 60})
    timer.on_epoch_begin(0)
    for batch in range(3):
        timer.on_train_batch_end(batch)
    assert timer.seconds is None  # not projected before min_batches
    with pytest.raises(optuna.TrialPruned, match=r"^too slow: about 60 s per epoch, over 50 s per epoch \(a test\)$"):
        timer.on_train_batch_end(3)
    assert timer.seconds == 60


def test_a_later_phases_first_epoch_that_would_end_past_the_deadline_stops_after_its_first_batches(monkeypatch):
    import types

    from imgsearch.trials import training
    from imgsearch.trials.budget import EpochPlan

    clock = iter([0.0, 0.0, 5.0, 6.0, 7.0, 8.0])  # created; epoch begins; a 5 s first batch; then 1 s a batch
    monkeypatch.setattr(training.time, "perf_counter", lambda: next(clock))
    plan = EpochPlan(4, deadline=130.0, clock=lambda: 100.0)  # 30 s left; this epoch would take 60
    timer = training.EpochTimer(plan=plan)
    timer.set_params({"steps": 60})
    timer.set_model(types.SimpleNamespace(stop_training=False))
    timer.on_train_begin()
    timer.on_epoch_begin(2)  # the fine-tuning phase begins after two head epochs
    for batch in range(4):
        timer.on_train_batch_end(batch)
    assert timer.model.stop_training and plan.stopped_at_deadline == 3


def test_by_default_an_epoch_may_take_twenty_times_the_median_complete_trials(tmp_path, digits):
    search = new_search(tmp_path, digits, pruner=optuna.pruners.NopPruner(), epochs=1, trials=1)
    study, tracker = search.study, search.tracker
    assert epoch_limit(study, None) == (None, "")  # no complete trial yet: no cap
    study.enqueue_trial(GOOD)
    search.run()
    measured = study.trials[0]
    seconds = measured.user_attrs[records.EPOCH_SECONDS_ATTR]
    assert measured.state == optuna.trial.TrialState.COMPLETE and 0 < seconds < 60
    assert trial_runs(tracker)[0].data.metrics[records.EPOCH_SECONDS_ATTR] == seconds
    assert epoch_limit(study, None)[0] == 60  # a short epoch: the floor
    for seconds in (10.0, 30.0, 20.0):
        study.add_trial(optuna.trial.create_trial(value=0.5, user_attrs={records.EPOCH_SECONDS_ATTR: seconds}))
    limit, why = epoch_limit(study, None)  # median of (measured, 10, 30, 20) = 15
    assert limit == 300 and why.startswith("20x the median complete trial's 15.0 s")
    assert epoch_limit(study, 0) == (None, "") and epoch_limit(study, 7.0) == (7.0, "MAX_EPOCH_SECONDS=7")


def test_nan_loss_fails_alone_and_the_study_goes_on(tmp_path, digits):
    search = new_search(tmp_path, digits, pruner=optuna.pruners.NopPruner(), epochs=2, trials=1)
    study, tracker = search.study, search.tracker
    study.enqueue_trial(EXPLODING)
    study.enqueue_trial(GOOD)
    with pytest.warns(UserWarning, match="out of range"):
        search.run()  # the failed trial is not counted: the good one is the study's one
    failed, complete = study.trials
    assert failed.state == optuna.trial.TrialState.FAIL
    assert "NaN" in failed.user_attrs[records.FAIL_REASON_ATTR]
    assert complete.state == optuna.trial.TrialState.COMPLETE
    runs = trial_runs(tracker)
    assert runs[0].info.status == "FAILED" and "NaN" in runs[0].data.tags[records.FAILURE_REASON_TAG]
    traceback = MlflowClient(tracker.tracking_uri).download_artifacts(runs[0].info.run_id, "traceback.txt", str(tmp_path))
    assert "Traceback (most recent call last)" in open(traceback).read()


def test_an_out_of_memory_trial_fails_alone_and_the_study_goes_on(tmp_path, digits):
    import keras

    from imgsearch.spaces.mlp import MLPSpace

    class HugeFirstTrial(MLPSpace):
        """Trial 0 builds two 2^20-unit dense layers: a 2^20 x 2^20 kernel needs 4 TiB."""

        def build(self, trial, image_shape, num_classes):
            if trial.number == 0:
                keras.Sequential([keras.Input((64,)), keras.layers.Dense(2**20), keras.layers.Dense(2**20)])
            return super().build(trial, image_shape, num_classes)

    search = new_search(tmp_path, digits, pruner=optuna.pruners.NopPruner(), epochs=1, trials=1, max_layers=4)
    search.objective.space = HugeFirstTrial(max_layers=4)  # a space no setting names
    study, tracker = search.study, search.tracker
    study.enqueue_trial(GOOD)
    study.enqueue_trial(GOOD)
    search.run()
    failed, complete = study.trials
    assert failed.state == optuna.trial.TrialState.FAIL
    reason = failed.user_attrs[records.FAIL_REASON_ATTR]
    assert reason.startswith("ResourceExhaustedError") and "OOM" in reason
    assert complete.state == optuna.trial.TrialState.COMPLETE and complete.value > 0.5
    assert trial_runs(tracker)[0].info.status == "FAILED"


def test_a_trial_started_once_the_target_is_taken_is_surplus_and_not_counted(tmp_path, digits):
    from imgsearch.trials.trial_target import finished_count, surplus_reason

    search = new_search(tmp_path, digits, pruner=optuna.pruners.NopPruner(), epochs=1, trials=2)
    study, tracker, objective = search.study, search.tracker, search.objective
    study.enqueue_trial(GOOD)
    study.optimize(objective, n_trials=1)
    other = study.ask()  # another worker's trial, just asked: live though not yet marked
    assert surplus_reason(study, other.number + 1, 2) is not None
    assert surplus_reason(study, other.number + 1, 3) is None
    study.optimize(objective, n_trials=1)  # trial 2: trials 0 and 1 take the target
    surplus = study.trials[2]
    assert surplus.state == optuna.trial.TrialState.PRUNED and surplus.user_attrs[records.SURPLUS_ATTR] is True
    assert (surplus.user_attrs[records.PRUNE_REASON_ATTR]
            == "not needed: 2 trials before it were finished or running (TRIALS=2)")
    assert finished_count(study) == 1 and sorted(trial_runs(tracker)) == [0]  # no MLflow run, not counted
    study.tell(other, state=optuna.trial.TrialState.FAIL)  # the other worker's trial failed: one more is needed
    study.optimize(objective, n_trials=1)
    assert study.trials[3].state == optuna.trial.TrialState.COMPLETE and finished_count(study) == 2


def test_the_last_worker_to_stop_ends_the_parent_run(tmp_path, digits):
    search = new_search(tmp_path, digits, pruner=optuna.pruners.NopPruner(), epochs=1, trials=2)
    study, tracker, objective = search.study, search.tracker, search.objective
    status = lambda: tracker.client.get_run(tracker.parent_run_id).info.status  # noqa: E731
    study.enqueue_trial(GOOD)
    study.optimize(objective, n_trials=1)
    other = study.ask()
    other.set_user_attr(records.WORKER_ATTR, "elsewhere:1")
    search.end_parent_run_if_last()  # this worker stops; the other still runs a trial
    assert status() == "RUNNING"
    study.tell(other, 0.5)
    search.end_parent_run_if_last()
    assert status() == "FINISHED"
    tracker.reopen()  # a resumed search
    assert status() == "RUNNING"
    search.target = 5
    search.end_parent_run_if_last()  # stopped short of the target
    assert status() == "KILLED"


def test_child_runs_nest_under_one_parent_and_hold_the_whole_trial(tmp_path, digits):
    search = new_search(tmp_path, digits, pruner=optuna.pruners.NopPruner(), epochs=2, trials=2)
    study, tracker = search.study, search.tracker
    study.enqueue_trial(GOOD)
    search.run()
    # A second process attaching to the same study re-uses the parent run.
    again = Tracker(tracker.tracking_uri, optuna.load_study(study_name=study.study_name, storage=storage_of(study)),
                    tracker.settings, tmp_path / "artifacts")
    assert again.parent_run_id == tracker.parent_run_id == study.user_attrs["mlflow_parent_run_id"]
    runs = trial_runs(tracker)
    assert sorted(runs) == [0, 1]
    client = MlflowClient(tracker.tracking_uri)
    for trial in study.trials:
        run = runs[trial.number]
        assert trial.user_attrs[records.RUN_ID_ATTR] == run.info.run_id
        assert run.data.tags["optuna.study"] == "digits-mlp"
        expected = {**{k: str(v) for k, v in tracker.settings.items()}, **{k: str(v) for k, v in trial.params.items()},
                    "data_fraction": "1.0"}  # the share of the training images: all of digits
        assert run.data.params == expected
        history = client.get_metric_history(run.info.run_id, "val_accuracy")
        assert [m.step for m in history] == [0, 1]
        for key in ("loss", "accuracy", "val_loss", "learning_rate", "param_count", "training_seconds"):
            assert key in run.data.metrics, key
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert "model_summary.txt" in artifacts and "learning_curves.png" not in artifacts  # drawn at export
    registry.log_learning_curves(tracker, study.trials[1])  # what export does for the best trial
    png = client.download_artifacts(runs[1].info.run_id, "learning_curves.png", str(tmp_path))
    assert open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_mlflow_mirrors_the_study_objective_order_state_and_one_moving_best_tag(tmp_path, digits):
    search = new_search(tmp_path, digits, pruner=optuna.pruners.NopPruner(), epochs=1, trials=3)
    study, tracker = search.study, search.tracker
    for params in (BAD, GOOD, BAD):
        study.enqueue_trial(params)
    marked = []

    def record_marker(study, trial):
        marked.append(sorted(int(r.data.tags["optuna.trial"]) for r in trial_runs(tracker).values()
                             if r.data.tags.get("best") == "true"))

    search.callbacks.append(record_marker)  # after the search's own, the best tag's among them
    search.run()
    study_order = [t.number for t in sorted(study.trials, key=lambda t: (-t.value, t.datetime_complete))]
    runs = tracker.client.search_runs([tracker.experiment_id], "attributes.run_name LIKE 'trial-%'",
                                      order_by=["metrics.objective DESC", "attributes.start_time ASC"])
    assert [int(r.data.tags["optuna.trial"]) for r in runs] == study_order
    assert [r.data.metrics["objective"] for r in runs] == sorted((t.value for t in study.trials), reverse=True)
    assert [r.info.run_name for r in runs][0] == f"trial-{study_order[0]} complete"
    assert marked == [[0], [1], [1]]  # the tag moved from trial 0 to trial 1, and only one run has it
    parent = tracker.client.get_run(tracker.parent_run_id)
    assert parent.data.metrics["best_val_accuracy"] == study.trials[1].value


def test_the_best_tag_already_taken_off_by_another_worker_is_not_an_error(tmp_path, digits, monkeypatch):
    """Two workers moving the tag at once both find the old best's run marked; the second one's
    delete finds no tag (it once ended that worker with MLflow's RESOURCE_DOES_NOT_EXIST)."""
    search = new_search(tmp_path, digits, pruner=optuna.pruners.NopPruner(), epochs=1)
    study, tracker = search.study, search.tracker
    for params in (BAD, GOOD):
        study.enqueue_trial(params)
    study.optimize(search.objective, n_trials=1, callbacks=[tracker.after_trial])
    old = trial_runs(tracker)[0]
    assert old.data.tags.get("best") == "true"
    tracker.client.delete_tag(old.info.run_id, "best")  # the other worker's delete
    monkeypatch.setattr(tracker.client, "search_runs", lambda *args, **kwargs: [old])  # what this one read before
    study.optimize(search.objective, n_trials=1, callbacks=[tracker.after_trial])
    monkeypatch.undo()
    assert study.trials[1].value > study.trials[0].value
    runs = trial_runs(tracker)
    assert runs[1].data.tags.get("best") == "true" and "best" not in runs[0].data.tags


def test_only_the_best_trials_model_is_kept(tmp_path, digits):
    search = new_search(tmp_path, digits, pruner=optuna.pruners.NopPruner(), epochs=1, trials=3)
    study, checkpoint = search.study, search.checkpoint
    study.enqueue_trial(BAD)
    study.enqueue_trial(GOOD)
    study.enqueue_trial(BAD)
    search.run()
    assert study.best_trial.number == 1
    assert [p.name for p in checkpoint.folder.glob("*.keras")] == ["trial-1.keras"]
    best, path = checkpoint.best(study)
    assert best.number == 1 and path.is_file()


def test_the_last_epoch_reports_but_never_prunes(tmp_path, digits):
    """A pruner that prunes everything stops a trial after epoch 1 of 2, but not its only epoch."""
    prune_all = optuna.pruners.ThresholdPruner(lower=2.0)  # accuracy is always below 2
    for epochs, state in ((2, optuna.trial.TrialState.PRUNED), (1, optuna.trial.TrialState.COMPLETE)):
        (tmp_path / str(epochs)).mkdir()
        search = new_search(tmp_path / str(epochs), digits, pruner=prune_all, epochs=epochs, trials=1)
        study, tracker = search.study, search.tracker
        study.enqueue_trial(GOOD)
        search.run()
        trial = study.trials[0]
        assert trial.state == state
        assert list(trial.intermediate_values) == [0]
        run = trial_runs(tracker)[0]  # the run's name says the state; only a complete trial has an objective
        assert run.info.run_name == f"trial-0 {'pruned' if epochs == 2 else 'complete'}"
        assert ("objective" in run.data.metrics) == (epochs == 1)


def test_a_trial_whose_study_database_is_lost_as_it_starts_ends_its_mlflow_run(tmp_path, digits, monkeypatch):
    """The database lost between the trial's MLflow run being made and its id being stored,
    or while the trial reads the study before training: the run ends FAILED with why."""
    search = new_search(tmp_path, digits, pruner=optuna.pruners.NopPruner())
    study, tracker, objective = search.study, search.tracker, search.objective
    storage = storage_of(study)  # the ReconnectingStorage behind Optuna's cache
    lost = DatabaseLost("study database gone")
    trial = study.ask()
    storage.lost = lost  # what ReconnectingStorage holds once its retry time ran out
    with pytest.raises(DatabaseLost):
        tracker.trial_run(trial, {})
    storage.lost = None
    [run] = trial_runs(tracker).values()
    assert run.info.status == "FAILED"
    reason = run.data.tags[records.FAILURE_REASON_TAG]
    assert reason == "cannot store the run's id in the study: DatabaseLost: study database gone"

    trial = study.ask()
    def lose_the_database(study, max_epoch_seconds):
        storage.lost = lost
        return epoch_limit(study, max_epoch_seconds)

    monkeypatch.setattr(objective_module, "epoch_limit", lose_the_database)
    with pytest.raises(DatabaseLost):
        objective(trial)
    storage.lost = None
    run = trial_runs(tracker)[trial.number]
    assert run.info.status == "FAILED"
    assert run.data.tags[records.FAILURE_REASON_TAG] == "DatabaseLost: study database gone"
