"""The generative models as plain ``nn.Module``s: no Lightning, h5py or generation code."""
