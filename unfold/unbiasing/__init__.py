"""Removing the training simulation's prior from an unfolding (the top-pT slope and the top mass).

:mod:`.top_prior` is the family of priors (top line shape and top-pT reweighting) relative to the
simulation that was generated; :mod:`.detector_observables` holds mass-hypothesis-free detector
observables; :mod:`.template_fit` fits the family's parameters to the data at detector level;
:mod:`.draw_weights` turns the fitted prior into per-draw weights of a trained unfolding.
"""
