"""A workdir's own config.json: to train on from where an import or another run left off.

  python scripts/train.py --config configs/from_workdir.py:workdir=runs/dit-xl2 \
      --workdir runs/dit-xl2 --config.data.name=npz:latents.npz --config.train.steps=2000
The JSON sits on top of the base config, so a field added since it was written
takes its default; any field can still be overridden on the command line.
"""
import os

from dit_jax import configlib


def get_config(arg=None):
  arg = configlib.parse_arg(arg, workdir="")
  file = os.path.join(arg.workdir, "config.json")
  if not arg.workdir or not os.path.exists(file):
    raise configlib.ConfigError(
        f"configs/from_workdir.py needs workdir=DIR with a config.json in it, got "
        f"{arg.workdir!r}; e.g. --config configs/from_workdir.py:workdir=runs/dit-xl2")
  return configlib.read_json_config(file)
