"""What a search leaves: the best checkpoint, MLflow runs, the exported model, its evaluation and the report."""
