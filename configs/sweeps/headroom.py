"""Headroom for unit choice: do pruning masks differ beyond fine-tuning noise?

Per seed: one base run to `at`; from its checkpoint, `masks` random masks at the
budget (prune.mask_seed 0..masks-1), each fine-tuned `ft` steps with the same
fine-tuning noise (prune.finetune_seed 0), and `reruns` more fine-tunings of mask 0
with other noise (finetune_seed 1..reruns; mask 0 itself is rerun 0). If the
spread across masks is no larger than the spread across reruns of one mask, no
importance score can pick a better mask at this budget (dit_jax.study.headroom
reads the variance ratio and its interval).

  python scripts/sweep.py --config configs/sweeps/headroom.py --workdir runs/headroom_gmm256
  python scripts/sweep.py --config configs/sweeps/headroom.py:runlocal --workdir /tmp/headroom
Arguments: data, n, seeds, seed0, at, ft, masks, reruns, budget, num, nll_num.
"""
from dit_jax import configlib

BUDGETS = {"h20": (0.2, 0.0), "h20m50": (0.2, 0.5)}  # (fraction of heads, of MLP units)


def _arg(arg):
  a = configlib.parse_arg(arg, data="gmm", n=256, seeds=3, seed0=10, at=4000, ft=1000,
                          masks=32, reruns=8, budget="h20m50", num=1000, nll_num=500)
  if a.runlocal:
    a.seeds, a.at, a.ft, a.masks, a.reruns = 1, 10, 10, 3, 2
  return a


def get_config(arg=None):
  a = _arg(arg)
  if a.budget not in BUDGETS:
    raise ValueError(f"headroom budget {a.budget!r} unknown; use one of {sorted(BUDGETS)}.")
  config = configlib.sweep_base(__file__, a.data, "runlocal" if a.runlocal else f"n={a.n}")
  config.prune.control, config.prune.eval_before = False, False
  config.prune.method = "random"
  config.prune.ratio, config.prune.mlp_ratio = BUDGETS[a.budget]
  config.sample.every = 0
  config.eval.num, config.eval.nll_num, config.eval.at_end = a.num, a.nll_num, True
  if a.runlocal:
    config.eval.num, config.eval.nll_num = 16, 8
  # the tracker at the last step, on the whole select split: the held-out excess
  config.memo.every, config.memo.probe = a.ft, config.data.n_select
  return config


def get_sweep(arg=None):
  a = _arg(arg)
  if a.budget not in BUDGETS:
    raise ValueError(f"headroom budget {a.budget!r} unknown; use one of {sorted(BUDGETS)}.")
  points = []
  for seed in range(a.seed0, a.seed0 + a.seeds):
    base = f"base-s{seed}"
    points.append(dict(name=base, method="base", budget="base", at=a.at,
                       overrides={"seed": seed, "train.steps": a.at}))

    def pruned(name, method, mask, noise):
      points.append(dict(name=f"{name}-s{seed}", method=method, budget="headroom", at=a.at,
                         start_from=(base, a.at), overrides={
                             "seed": seed, "train.steps": a.at + a.ft, "prune.at_step": a.at,
                             "prune.mask_seed": mask, "prune.finetune_seed": noise}))
    for j in range(a.masks):
      pruned(f"mask{j}", "mask", j, 0)
    for r in range(1, a.reruns + 1):
      pruned(f"rerun{r}", "rerun", 0, r)
  return points
