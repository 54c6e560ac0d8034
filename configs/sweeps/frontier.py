"""Memorization against quality for every way a user can hold memorization back.

Per seed (its own training subset, shared by every family), one evaluation grid:
  early_stop  the plain run, evaluated every `every` steps up to `steps` (no prune);
              its checkpoints are the early-stopping baseline (and, read through
              the tracker, the tracker-chosen stop);
  wd<x>       the same run with AdamW decay x, evaluated on the same steps;
  w<f>        a narrower model from scratch (a fraction f of the heads and MLP
              units, head size fixed: the capacity grid's shapes);
              wd and w are evaluated at the compared steps `compare` and the end;
  <method>    pruned at `at` from early_stop's own checkpoint by `method` at the
              budget (`budget`: every method removes the same units), fine-tuned
              on the same images and evaluated `evals` fine-tuning steps later.
Every evaluation has the same samples (`num`), and the model's likelihood of the
test split and the training set (test_nll, train_nll, nll_gap) on `nll_num` points.
The frontier and its dominance intervals are read by dit_jax.study.frontier.
Points run in order: every seed's early_stop and pruned points first (the
comparison the verdict rests on), then the other families.

  python scripts/sweep.py --config configs/sweeps/frontier.py:data=gmm --workdir runs/frontier_gmm
  python scripts/sweep.py --config configs/sweeps/frontier.py:data=digits --workdir runs/frontier_digits
  python scripts/sweep.py --config configs/sweeps/frontier.py:runlocal --workdir /tmp/frontier
Arguments (all optional, `+` joins lists): data, n, seeds, seed0, steps, every, at,
evals, compare, budget, methods, decays, widths, num (samples), nll_num (likelihood
points).
"""
from dit_jax import configlib

BUDGETS = {"h20": (0.2, 0.0), "h20m50": (0.2, 0.5)}  # (fraction of heads, of MLP units)
METHODS = ("random", "head_grad", "magnitude", "select_taylor", "contrast")
FULL_HEADS = 4  # the heads of a tiny block


def _arg(arg):
  a = configlib.parse_arg(
      arg, data="gmm", n=32, seeds=5, seed0=0, steps=6000, every=500, at=4000,
      evals="250+500+1000+2000+8000", budget="h20m50", methods="random+head_grad",
      decays="0.01+0.1+1", widths="0.5+0.25", compare="2000+4000+6000", num=1000,
      nll_num=500)
  if a.runlocal:  # one seed, one decay, one width, a few steps: under 3 minutes
    a.seeds, a.steps, a.every, a.at, a.evals, a.compare = 1, 20, 10, 10, "5+10", "10"
    a.decays, a.widths = a.decays.split("+")[-1], a.widths.split("+")[0]
  return a


def _ints(text):
  return [int(v) for v in text.split("+") if v]


def _floats(text):
  return [float(v) for v in text.split("+") if v]


def get_config(arg=None):
  """The base config every point shares (before its overrides)."""
  a = _arg(arg)
  config = configlib.sweep_base(__file__, a.data, "runlocal" if a.runlocal else f"n={a.n}")
  config.prune.at_step, config.prune.finetune_steps = -1, 0  # set per point
  config.prune.control, config.prune.eval_before = False, False  # early_stop is both
  config.sample.every = 0
  config.eval.num, config.eval.nll_num, config.eval.at_end = a.num, a.nll_num, True
  # the early-stopping checkpoints the pruned points start from are kept
  config.checkpoint.every, config.checkpoint.keep = a.every, 1000
  hidden = config.model.hidden or 128  # tiny's
  config.model.head_dim = hidden // FULL_HEADS  # fixed while heads go
  if a.runlocal:
    config.prune.batches, config.prune.batch_size = 2, 8
    config.eval.num, config.eval.nll_num = 16, 8
    config.memo.every = 5
  return config


def _shape(width, depth, full_mlp):
  heads = max(1, round(FULL_HEADS * width))
  return (heads,) * depth, (max(8, 8 * round(full_mlp * width / 8)),) * depth


def get_sweep(arg=None):
  """early_stop and its pruned points for every seed (pruning starts from early_stop's
  checkpoint), then weight decay and the narrower models."""
  a = _arg(arg)
  if a.budget not in BUDGETS:
    raise ValueError(f"frontier budget {a.budget!r} unknown; use one of {sorted(BUDGETS)}.")
  methods = [m for m in a.methods.split("+") if m]
  for m in methods:
    if m not in METHODS:
      raise ValueError(f"frontier method {m!r} unknown; use one of {METHODS}.")
  if a.at % a.every or not 0 < a.at < a.steps:
    raise ValueError(f"frontier at={a.at} must be a multiple of every={a.every} below "
                     f"steps={a.steps}: the pruned points start from an early_stop checkpoint.")
  config = get_config(arg)
  depth = config.model.depth or 4  # tiny's
  full_mlp = int(config.model.head_dim * FULL_HEADS * config.model.mlp_ratio)
  grid = tuple(range(a.every, a.steps, a.every))  # the end is evaluated at_end
  heads_cut, mlp_cut = BUDGETS[a.budget]
  compare = tuple(s for s in _ints(a.compare) if s < a.steps)
  ft = max(_ints(a.evals))
  first, then = [], []  # early_stop and pruning of every seed, then the rest
  for seed in range(a.seed0, a.seed0 + a.seeds):
    stop = f"early_stop-s{seed}"

    def family(into, name, method, at_steps, **over):
      into.append(dict(name=f"{name}-s{seed}", method=method, budget="frontier", at=0,
                       overrides={"seed": seed, "train.steps": a.steps,
                                  "eval.at_steps": at_steps, **over}))
    family(first, "early_stop", "early_stop", grid)
    for m in methods:
      first.append(dict(
          name=f"{m}@{a.budget}-s{seed}", method=m, budget=a.budget, at=a.at,
          start_from=(stop, a.at), overrides={
              "seed": seed, "prune.at_step": a.at, "train.steps": a.at + ft,
              "prune.method": m, "prune.ratio": heads_cut, "prune.mlp_ratio": mlp_cut,
              "eval.at_steps": tuple(a.at + e for e in _ints(a.evals) if e < ft)}))
    for x in _floats(a.decays):
      family(then, f"wd{x:g}", f"wd{x:g}", compare, **{"train.weight_decay": x})
    for w in _floats(a.widths):
      heads, mlp = _shape(w, depth, full_mlp)
      family(then, f"w{w:g}", f"w{w:g}", compare, **{"model.heads": heads, "model.mlp": mlp,
                                                      "model.depth": depth})
  return first + then
