"""Where things live: storage URLs, Optuna storages and the runs folder layout."""

from storage.layout import RunsLayout
from storage.urls import default_storage_url, mask_url
from storage.optuna_storage import open_storage

__all__ = ["RunsLayout", "default_storage_url", "mask_url", "open_storage"]
