"""Shared helpers of the Oh-LoRA scripts: data, models, training, inference, logs."""
