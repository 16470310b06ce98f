"""Lightning modules wrapping the networks, trainer construction, run folders and checkpoints."""
