"""The search-space language: dimensions (:mod:`.dimensions`: Int, Float, Categorical, Fixed) and one space
mapped onto each engine (:mod:`.space`: scipy distributions, grids, Optuna's ``suggest_*``)."""
