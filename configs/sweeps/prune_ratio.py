"""The Table-1 comparison: prune methods x seeds from one base run per seed.

Each seed trains one base model to `at` steps (shared by every point of that
seed); each point prunes it (or not: "original") and fine-tunes `ft` steps on
the same training set, then samples and measures memorization and quality.
  python scripts/sweep.py --config configs/sweeps/prune_ratio.py:data=digits --workdir runs/sweep_digits
  python scripts/sweep.py --config configs/sweeps/prune_ratio.py:data=gmm,seeds=3 --workdir W
Arguments (all optional): data, n, seeds, at, ft, num, methods (joined by +), ratios
(joined by +), ema_restart (0 keeps the sliced EMA's decay through fine-tuning).
"""
import os

from dit_jax import configlib

_HERE = os.path.dirname(os.path.abspath(__file__))

# name -> config.prune overrides. "original" is the control: the same prune event
# removing nothing, so it gets the same fine-tuning and the same EMA restart
METHODS = {
    "original": dict(method="random", ratio=0.0, mlp_ratio=0.0),
    "head_grad": dict(method="head_grad", ratio=0.2, mlp_ratio=0.0),  # the paper
    "random": dict(method="random", ratio=0.2, mlp_ratio=0.0),  # the paper's baseline
    "contrast_heads": dict(method="contrast", ratio=0.2, mlp_ratio=0.0),  # the paper's budget
    "contrast_mlp25": dict(method="contrast", ratio=0.2, mlp_ratio=0.25),
    "contrast": dict(method="contrast", ratio=0.2, mlp_ratio=0.5),
    "capacity": dict(method="contrast", target="capacity"),
}


def _arg(arg):
  return configlib.parse_arg(arg, data="digits", n=32, seeds=3, at=4000, ft=500, num=512,
                             methods="+".join(METHODS), ratios="0.2", ema_restart=1)


def get_config(arg=None):
  """The base config every point shares (before its overrides)."""
  a = _arg(arg)
  name = {"digits": "default.py", "gmm": "gmm.py"}[a.data]
  base_arg = "runlocal" if a.runlocal else f"n={a.n}"
  config = configlib.load_config_file(os.path.join(_HERE, "..", name)).get_config(base_arg)
  if not a.runlocal:
    config.prune.at_step, config.prune.finetune_steps = a.at, a.ft
    config.eval.num = a.num
    config.sample.every = 0
  else:
    config.prune.at_step, config.prune.finetune_steps = 10, 5
    config.prune.batches, config.prune.batch_size = 2, 8
    config.prune.capacity_steps, config.prune.capacity_ratios = 2, (0.25, 0.5)
    config.eval.num = 16
  config.prune.eval_before = False
  config.prune.ema_restart = bool(a.ema_restart)  # ema_restart=0: the stale-EMA protocol
  config.eval.at_end = True  # every point ends with its eval.json
  return config


def get_sweep(arg=None):
  """A list of points: a name and dotted config overrides."""
  a = _arg(arg)
  seeds = range(1 if a.runlocal else a.seeds)
  methods = a.methods.split("+")  # e.g. methods=original+head_grad
  points = []
  ratios = [float(r) for r in a.ratios.split("+")]  # e.g. ratios=0.2+0.4 (heads)
  for seed in seeds:
    for m in methods:
      for r in ratios if METHODS[m].get("ratio") else [None]:  # not the 0% control
        over = {"seed": seed, **{f"prune.{k}": v for k, v in METHODS[m].items()}}
        name = m
        if r is not None and len(ratios) > 1:
          over["prune.ratio"], name = r, f"{m}@{r:g}"
        points.append({"name": f"{name}-s{seed}", "method": name, "overrides": over})
  return points
