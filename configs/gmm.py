"""The paper's Gaussian mixture: K=8 components, mu_k ~ N(0, 4 I_d), identity covariance.

The density is known, so the ground-truth score and its loss are exact. The d
dimensions are laid out as an image (side x side x channels) for the DiT.
  python scripts/train.py --config configs/gmm.py:n=64 --workdir runs/gmm_n64
  python scripts/train.py --config configs/gmm.py:n=3200,d=32,variant=S/2 --workdir W
"""
from dit_jax import configlib

# d -> (side, channels): small square images with a patch size that divides them
_LAYOUTS = {16: (4, 1), 32: (4, 2), 48: (4, 3), 64: (8, 1), 128: (8, 2),
            192: (8, 3), 256: (16, 1), 768: (16, 3), 3072: (32, 3)}


def get_config(arg=None):
  arg = configlib.parse_arg(arg, n=64, d=64, k=8, variant="tiny/2", steps=6000)
  if arg.d not in _LAYOUTS:
    raise ValueError(f"gmm config argument d={arg.d}: use one of {sorted(_LAYOUTS)}.")
  side, channels = _LAYOUTS[arg.d]
  config = configlib.base_config()
  config.data.name = "gmm"
  config.data.n_train = arg.n
  config.data.image_size = side
  config.data.channels = channels
  config.data.gmm.k = arg.k
  config.data.gmm.scale = 2.0  # mu_k ~ N(0, 2^2 I)
  config.model.variant = arg.variant
  config.train.steps = arg.steps
  config.train.batch_size = 32
  if arg.runlocal:
    configlib.make_runlocal(config)
    config.data.gmm.size = 2000
  return config
