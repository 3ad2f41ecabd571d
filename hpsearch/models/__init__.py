"""Model factories, the scikeras wrappers and the Keras adapters.

Importing the package first quiets TensorFlow's start-up logs (:mod:`hpsearch.models.backend`),
whatever module of it is asked for and whatever that module imports first.
"""

from hpsearch.models import backend  # noqa: F401
