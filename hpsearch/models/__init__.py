"""Model factories, the scikeras wrappers and the Keras adapters (imported lazily: TensorFlow is heavy)."""
