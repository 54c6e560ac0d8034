"""TFDS builders for the project's built-in datasets (no TensorFlow needed)."""
from dit_jax.datasets.crops import Crops
from dit_jax.datasets.digits import Digits
from dit_jax.datasets.gmm import Gmm, GmmConfig, gmm_config, mixture_params

__all__ = ["Crops", "Digits", "Gmm", "GmmConfig", "gmm_config", "mixture_params"]
