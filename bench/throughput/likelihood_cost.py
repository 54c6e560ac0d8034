"""Time of one likelihood evaluation (test_nll, train_nll, nll_gap) of a trained run.

  python bench/throughput/likelihood_cost.py --workdir runs/frontier_gmm/early_stop-s10
  python bench/throughput/likelihood_cost.py --workdir W --step 3000 --num 1000
Loads the EMA weights of a workdir's checkpoint, compiles the probability-flow ODE
solve once, then times `--reps` full evaluations on `--num` points of the test split
and of the training set, and prints one JSON object (the solver's step counts too:
a memorizing model's ODE is stiffer and takes more steps than a fresh one's).
"""
import argparse
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)
from dit_jax import configlib, data, evaluate, sharding, workdir as workdir_lib  # noqa: E402


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--workdir", required=True, help="a trained run's workdir")
  ap.add_argument("--step", type=int, default=None, help="checkpoint step (default: newest)")
  ap.add_argument("--num", type=int, default=1000, help="points of each split")
  ap.add_argument("--reps", type=int, default=2, help="timed evaluations (median)")
  args = ap.parse_args()
  config, setup, state, meta = workdir_lib.load(args.workdir, args.step, sharding.make_mesh())
  config = configlib.with_overrides(config, {"eval.nll_num": args.num})
  dataset = data.load(config.data, config.seed)
  t0 = time.perf_counter()
  out = evaluate.model_likelihood(config, setup, state["ema"], dataset, config.seed)
  first = time.perf_counter() - t0
  times = []
  for _ in range(args.reps):
    t0 = time.perf_counter()
    out = evaluate.model_likelihood(config, setup, state["ema"], dataset, config.seed)
    times.append(time.perf_counter() - t0)
  times.sort()
  print(json.dumps({
      "bench": "likelihood_cost", "data": config.data.name, "step": meta["step"],
      "test_points": out["test_nll_num"], "train_points": out["train_nll_num"],
      "seconds": times[len(times) // 2], "first_call_seconds": first,
      "method": out["nll_method"], "test_nll": out["test_nll"], "nll_gap": out["nll_gap"],
      "unit": out["nll_unit"]}))


if __name__ == "__main__":
  main()
