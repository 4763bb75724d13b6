"""The shipped tiny models' procedural data, training and model cards."""
