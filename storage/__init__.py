"""Where things live: storage URLs, Optuna storages, the runs folder layout and its MLflow store."""

from storage.layout import RunsLayout
from storage.urls import default_storage_url, mask_url
from storage.mlflow_store import local_tracking_uri
from storage.optuna_storage import open_storage

__all__ = ["RunsLayout", "default_storage_url", "local_tracking_uri", "mask_url", "open_storage"]
