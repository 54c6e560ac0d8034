"""Your own images: an .npz file or a folder, at their own size, trained without pruning.

  python scripts/train.py --config configs/own_data.py:data=folder:PATH --workdir runs/mine
  python scripts/train.py --config configs/own_data.py:data=npz:PATH,size=64,n=5000 --workdir runs/mine
Arguments: data (required: npz:PATH, arrays "images" uint8 NHWC and optional "labels", or
folder:PATH, image files flat or one subfolder per class), size (side in pixels; every
image is resized to it), channels (3, or 1 for greyscale), n (training images; the select
and test splits are drawn from the rest, and shrink when the data is small), steps,
variant. RGB data is judged by Inception FID too: convert its weights once with
`python scripts/convert_fid_weights.py`, or pass --config.eval.fid=off.
"""
from dit_jax import configlib
from dit_jax.configlib import ConfigError


def get_config(arg=None):
  arg = configlib.parse_arg(arg, data="", size=32, channels=3, n=1000, steps=20000,
                            variant="tiny/2")
  if not arg.data.startswith(("npz:", "folder:")):
    raise ConfigError("configs/own_data.py needs data=npz:PATH or data=folder:PATH, e.g. "
                      "--config configs/own_data.py:data=folder:my_images")
  config = configlib.base_config()
  config.data.name = arg.data
  config.data.image_size, config.data.channels = arg.size, arg.channels
  config.data.n_train = arg.n
  config.model.variant = arg.variant
  config.train.steps = arg.steps
  config.checkpoint.every = 2000
  config.sample.every = 2000
  if arg.runlocal:
    configlib.make_runlocal(config)
  return config
