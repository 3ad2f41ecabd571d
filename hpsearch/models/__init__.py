"""Model factories, the scikeras wrappers and the Keras adapters.

Importing the package imports no engine: :mod:`hpsearch.models.backend_choice` picks the Keras backend first.
Every module here that uses Keras imports :mod:`hpsearch.models.backend` before anything else that loads it
(which quiets TensorFlow's start-up logs).
"""
