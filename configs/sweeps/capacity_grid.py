"""The capacity the ground-truth score needs: DiTs trained from scratch over width x n.

Every cell trains `tiny/2` with a fraction of its heads and MLP units (hidden size
and head size fixed) on n training images, then measures memorization
(mem_ratio), quality (nll on gmm, fd), and, with a large probe, the held-out
loss per noise bucket and, on gmm, its excess over the true score's loss on the
same probe (memo_ema/gt_excess_t*).
  python scripts/sweep.py --config configs/sweeps/capacity_grid.py:data=gmm --workdir runs/grid_gmm
  python scripts/sweep.py --config configs/sweeps/capacity_grid.py:data=digits --workdir runs/grid_digits
  python scripts/sweep.py --config configs/sweeps/capacity_grid.py:runlocal --workdir /tmp/grid
Arguments (`+` joins lists): data, ns, widths (fractions of the full model's units;
above 1 widens it, e.g. 1.5+2 to bracket W* from above), seeds (how many, from seed0),
steps, num (samples per evaluation), nll (likelihood points per evaluation; -1: the
base config's eval.nll_num, 0: none).
The ground-truth capacity W*(tol) is read off the largest n (scripts/results.py, the
capacity sections of docs/RESULTS.md): the smallest width whose held-out excess over the
true score's loss is within (1 + tol) of the full width's; on digits, with no density,
the proxy is the same reading of the held-out loss itself. RESULTS.md lists the commands
its grids ran as (split by n, widths and seed0 into one sweep per core).
"""
from dit_jax import configlib

# data -> (training-set sizes, select images, test images); digits' largest n is every
# image the select and test splits leave (1797 - 256 - 500)
DATA = {"gmm": ("32+128+512+2048+16384", 512, 1000), "digits": ("32+1041", 256, 500)}
FULL_HEADS = 4  # the heads of a tiny block


def _arg(arg):
  return configlib.parse_arg(arg, data="gmm", ns="", widths="1+0.75+0.5+0.25+0.125", seeds=1,
                             seed0=0, steps=6000, num=1000, nll=-1)


def get_config(arg=None):
  a = _arg(arg)
  config = configlib.sweep_base(__file__, a.data, "runlocal" if a.runlocal else None)
  config.prune.at_step, config.prune.control = -1, False
  _, config.data.n_select, config.data.n_test = DATA[a.data]
  config.train.steps = a.steps
  config.sample.every = 0
  config.eval.num, config.eval.at_end = a.num, True
  if a.nll >= 0:  # likelihood points (the base config's eval.nll_num otherwise; 0: none)
    config.eval.nll_num = a.nll
  if a.runlocal:
    config.data.n_select, config.data.n_test = 32, 32
    config.train.steps, config.eval.num = 10, 16
  # the tracker once, at the end, on probes as large as the select split
  config.memo.every, config.memo.probe = config.train.steps, config.data.n_select
  hidden = config.model.hidden or 128  # tiny's
  config.model.head_dim = hidden // FULL_HEADS  # fixed while heads go
  return config


def shape(width, depth, full_mlp):
  """Per-block (heads, MLP units) of a width fraction: at least one head per block,
  MLP units a multiple of 8."""
  heads = max(1, round(FULL_HEADS * width))
  mlp = max(8, 8 * round(full_mlp * width / 8))
  return (heads,) * depth, (mlp,) * depth


def get_sweep(arg=None):
  a = _arg(arg)
  config = get_config(arg)
  depth = config.model.depth or 4  # tiny's
  full_mlp = int(config.model.head_dim * FULL_HEADS * config.model.mlp_ratio)
  ns = [int(n) for n in (a.ns or DATA[a.data][0]).split("+")]
  widths = [float(w) for w in a.widths.split("+")]
  if a.runlocal:
    ns, widths = [32, 64], widths[:2]
  points = []
  for seed in range(a.seed0, a.seed0 + a.seeds):
    for n in ns:
      for w in widths:
        heads, mlp = shape(w, depth, full_mlp)
        points.append(dict(
            name=f"n{n}-w{w:g}-s{seed}", method=f"w{w:g}", budget=f"n{n}", at=0,
            overrides={"seed": seed, "data.n_train": n, "model.heads": heads,
                       "model.mlp": mlp, "model.depth": depth}))
  return points
