"""Names of what a trial records in the study (user attrs) and in MLflow beside its params and values."""

EPOCH_SECONDS_ATTR = "epoch_seconds"  # the slowest epoch's projected seconds
PLANNED_EPOCHS_ATTR = "planned_epochs"  # the epochs the trial planned, once cut to fit the budget
DEADLINE_ATTR = "stopped_at_deadline"  # the epoch (from 1) after which the budget's deadline stopped it
OBJECTIVE_METRIC = "objective"  # MLflow metric on a complete trial's run: its value in the study
