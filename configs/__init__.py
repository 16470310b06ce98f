"""Packaged configuration: SPANet event files, detector cards and model configs (read with importlib.resources)."""
