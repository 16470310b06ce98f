"""Removing the training simulation's prior from an unfolding (the top mass and the top-pT slope).

:mod:`.top_prior` is the family of priors (top line shape and top-pT reweighting) relative to the
simulation that was generated; :mod:`.template_fit` fits its parameters to the data at detector level;
:mod:`.draw_weights` turns the fitted prior into per-draw weights of a trained unfolding.
"""
