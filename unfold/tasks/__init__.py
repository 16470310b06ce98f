"""One module per job a user runs: train, evaluate, predict and sample."""
