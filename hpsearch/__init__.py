"""hpsearch: tracked hyperparameter search for Keras models, the Hands-On ML chapter 10 way."""

from hpsearch.dimensions import Categorical, Fixed, Float, Int

__version__ = "0.1.0"
__all__ = ["Categorical", "Fixed", "Float", "Int", "__version__"]
