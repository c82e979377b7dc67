-- One database per store: Optuna and MLflow both keep an alembic_version table.
CREATE DATABASE optuna;
CREATE DATABASE mlflow;
