"""Event generation: Pythia 8 showers, FastJet particle level, the detector card and ``unfold inspect``."""
