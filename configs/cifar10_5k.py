"""The paper's Table 1 setting: a random 5,000-image CIFAR-10 subset, for accelerators.

Needs the prepared TFDS dataset (no network at run time):
  tfds build cifar10 --file_format=array_record
  python scripts/train.py --config configs/cifar10_5k.py --workdir runs/cifar5k
The paper does not state its DiT size or schedule; S/2 with DiT's own recipe
(AdamW 1e-4, no weight decay, EMA 0.9999, batch 128) is our choice.
"""
from dit_jax import configlib


def get_config(arg=None):
  arg = configlib.parse_arg(arg, n=5000, variant="S/2", steps=200_000)
  config = configlib.base_config()
  config.data.name = "cifar10"
  config.data.n_train = arg.n
  config.data.n_select, config.data.n_test = 1000, 10000
  config.data.image_size = 32
  config.data.channels = 3
  config.model.variant = arg.variant
  config.model.dtype = "bfloat16"
  config.train.steps = arg.steps
  config.train.batch_size = 128
  config.train.lr = 1e-4
  config.train.warmup_steps = 1000
  config.train.ema_decay = 0.9999
  config.log_every = 500
  config.checkpoint.every = 5000
  config.sample.every = 20000
  config.sample.num = 64
  if arg.runlocal:
    configlib.make_runlocal(config)
    config.data.n_train = 64
    config.model.variant = "tiny/4"
  return config
