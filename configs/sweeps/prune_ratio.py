"""Pruning methods compared at equal budgets, over seeds, with durability.

Per seed: a base run (its own training subset) to step `at`, evaluated at
`base_evals` for the tracker-vs-memorization comparison; then every point
starts from a copy of its step-`at` checkpoint, prunes (or not: the control,
"original", whose prune event removes nothing), fine-tunes `ft` steps on the
same training images, and is evaluated at each of `evals` fine-tuning steps.
At each budget every method removes exactly the same number of heads and MLP
units; "scratch" trains the pruned shape (contrast's, per seed) from step 0
for the same at + ft steps.

  python scripts/sweep.py --config configs/sweeps/prune_ratio.py:data=digits --workdir runs/sweep_digits
  python scripts/sweep.py --config configs/sweeps/prune_ratio.py:data=gmm --workdir runs/sweep_gmm
  python scripts/sweep.py --config configs/sweeps/prune_ratio.py:runlocal --workdir /tmp/sw
Arguments (all optional, `+` joins lists): data, n, seeds, seed0 (first seed), at, ft,
evals (fine-tuning steps to evaluate at), base_evals, num (samples per evaluation),
budgets, methods, scratch (budgets that get a from-scratch row), short (budgets
whose points fine-tune only short_ft steps), ema_restart (0 keeps the sliced EMA's
decay), control (0 leaves out the unpruned control: for adding methods to seeds whose
control already ran elsewhere), capacity_fit (the capacity search's data: auto, gt,
train_gt, select, train).
"""
from dit_jax import configlib


# budget -> (fraction of heads, fraction of MLP units); "cap": the capacity search's choice
BUDGETS = {"h20": (0.2, 0.0),  # the paper's budget: 20% of the heads
           "h20m50": (0.2, 0.5),  # and half of the MLP units
           "cap": None}
# method -> config.prune overrides
METHODS = {
    "random": dict(method="random"),  # the paper's baseline
    "magnitude": dict(method="magnitude"),
    "head_grad": dict(method="head_grad"),  # the paper's Algorithm 2
    "contrast": dict(method="contrast"),  # ours: select-split vs training-set importance
    "contrast_smallt": dict(method="contrast", t_beta=(0.5, 5.0)),  # mean t/T 0.09
    "specific": dict(method="specific"),  # ours: per-image outliers against the select split
    "select_taylor": dict(method="select_taylor"),  # ours: signed held-out Taylor
}
SHAPE_OF = {"cap": "capacity"}  # whose pruned shape "scratch" trains; default contrast


def _arg(arg):
  return configlib.parse_arg(
      arg, data="digits", n=32, seeds=5, seed0=0, at=4000, ft=2000, evals="250+500+1000+2000",
      base_evals="1000+2000+3000+4000", num=1000, budgets="h20+h20m50+cap",
      methods="random+magnitude+head_grad+contrast", scratch="h20m50", short="",
      short_ft=500, ema_restart=1, control=1, capacity_fit="auto")


def _ints(text):
  return [int(v) for v in text.split("+") if v]


def get_config(arg=None):
  """The base config every point shares (before its overrides)."""
  a = _arg(arg)
  config = configlib.sweep_base(__file__, a.data, "runlocal" if a.runlocal else f"n={a.n}")
  config.prune.at_step, config.prune.finetune_steps = -1, 0  # set per point
  config.eval.num = a.num
  config.sample.every = 0
  if a.runlocal:
    config.prune.batches, config.prune.batch_size = 2, 8
    config.prune.capacity_steps, config.prune.capacity_ratios = 2, (0.5,)
    config.eval.num = 16
  config.prune.eval_before = False  # the base run's evaluation at `at` is the "before"
  # the sweep's "original" point is the control, shared by every point of a seed; a
  # control inside each point (on in configs/default.py) would double every point's cost
  config.prune.control = False
  config.prune.ema_restart = bool(a.ema_restart)
  config.prune.capacity_fit = a.capacity_fit
  config.eval.at_end = True  # every point ends with its eval.json
  return config


def get_sweep(arg=None):
  """Points in the order they run: per seed the base, the control, then each budget."""
  a = _arg(arg)
  if a.runlocal:
    a.seeds, a.at, a.ft, a.evals, a.base_evals = 1, 10, 10, "5+10", "5+10"
    if a.budgets == _arg(None).budgets:  # the 20%+50% and capacity budgets: < 3 minutes
      a.budgets = "h20m50+cap"
  at = a.at

  def evals(ft):  # the evaluated steps of a point that fine-tunes ft steps
    steps = [at + e for e in _ints(a.evals) if e <= ft]
    return tuple(steps + [at + ft] * (at + ft not in steps))
  budgets = [b for b in a.budgets.split("+") if b]
  methods = [m for m in a.methods.split("+") if m]
  for b in budgets:
    if b not in BUDGETS:
      raise ValueError(f"sweep budget {b!r} unknown; use {sorted(BUDGETS)}.")
  for m in methods:
    if m not in METHODS:
      raise ValueError(f"sweep method {m!r} unknown; use {sorted(METHODS)}.")
  points = []
  for seed in range(a.seed0, a.seed0 + a.seeds):
    base = f"base-s{seed}"
    points.append(dict(name=base, method="base", budget="base", at=at, overrides={
        "seed": seed, "train.steps": at,
        "eval.at_steps": tuple(s for s in _ints(a.base_evals) if s < at)}))

    def pruned(name, method, budget, prune, needs=None):
      ft = a.short_ft if budget in a.short.split("+") else a.ft
      over = {"seed": seed, "prune.at_step": at, "train.steps": at + ft,
              "eval.at_steps": evals(ft), **{f"prune.{k}": v for k, v in prune.items()}}
      points.append(dict(name=f"{name}-s{seed}", method=method, budget=budget, at=at,
                         start_from=(base, at), overrides=over, needs=needs or {}))

    if a.control:
      pruned("original", "original", "none", dict(method="random", ratio=0.0, mlp_ratio=0.0))
    for b in budgets:
      if BUDGETS[b] is None:  # the capacity search chooses the cut; the others follow it
        cap = f"capacity@{b}-s{seed}"
        pruned(f"capacity@{b}", "capacity", b, dict(method="contrast", target="capacity"))
        needs = {"prune.ratio": (cap, "prune.ratio"), "prune.mlp_ratio": (cap, "prune.mlp_ratio")}
        fixed = {}
      else:
        needs, fixed = {}, dict(ratio=BUDGETS[b][0], mlp_ratio=BUDGETS[b][1])
      for m in methods:
        if BUDGETS[b] is None and m == "contrast":
          continue  # the capacity point is contrast at its own width
        pruned(f"{m}@{b}", m, b, dict(METHODS[m], **fixed), needs)
      if b in a.scratch.split("+"):
        shape = f"{SHAPE_OF.get(b, 'contrast')}@{b}-s{seed}"
        points.append(dict(
            name=f"scratch@{b}-s{seed}", method="scratch", budget=b, at=at,
            overrides={"seed": seed, "train.steps": at + a.ft, "eval.at_steps": evals(a.ft)},
            needs={"model.heads": (shape, "prune.heads"), "model.mlp": (shape, "prune.mlp"),
                   "model.head_dim": (shape, "prune.head_dim")}))
  return points
