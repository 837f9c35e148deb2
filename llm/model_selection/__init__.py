"""Model selection: candidate base models and the metrics that compare their answers."""
