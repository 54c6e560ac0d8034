"""The embedded default: digits, n=32 training images, a 1.3M-parameter DiT.

Small n so that memorization is reachable on 2 CPU cores in a few minutes.
  python scripts/train.py --config configs/default.py --workdir runs/default
  python scripts/train.py --config configs/default.py:runlocal --workdir /tmp/w
"""
from dit_jax import configlib


def get_config(arg=None):
  arg = configlib.parse_arg(arg, n=32, variant="tiny/2", steps=5000)
  config = configlib.base_config()
  config.data.name = "digits"
  config.data.n_train = arg.n
  config.model.variant = arg.variant
  # the main job prunes inside the run: train `steps`, then importance, surgery
  # and 1000 steps of fine-tuning on the same images
  config.train.steps = arg.steps + 1000
  config.prune.at_step = arg.steps
  config.prune.ratio, config.prune.mlp_ratio = 0.2, 0.5
  config.prune.control = True  # and the unpruned model fine-tuned the same, to compare
  # the likelihood on 256 test points (and all n training images) at each of the run's
  # three evaluations: ~4x cheaper than the base config's 1,000, for make run's budget
  config.eval.nll_num = 256
  if arg.runlocal:
    configlib.make_runlocal(config)
    config.prune.at_step, config.prune.control = -1, False
  return config
