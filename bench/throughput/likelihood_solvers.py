"""Fixed-step solvers against the adaptive default for the likelihood (test_nll, nll_gap).

  python bench/throughput/likelihood_solvers.py --workdir runs/explore_gmm/early_stop-s100 --steps 2000+6000
  python bench/throughput/likelihood_solvers.py --workdir W --steps 4000 --heun 8+16+32 --num 500
For each checkpoint step: the run's own setting (config.eval: tsit5 at rtol 1e-3 unless
changed), Heun with a fixed number of steps, and tsit5 at tighter tolerances (is the
default converged?), each timed on its second call (the
first compiles), on the same points and the same Rademacher probes. Prints one JSON
object per line: the setting, seconds, test_nll and nll_gap, and their differences
from the adaptive reference next to the reference's standard errors (a fixed-step
solver agrees where its difference is well inside them).
"""
import argparse
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)
from dit_jax import configlib, data, evaluate, sharding, workdir as workdir_lib  # noqa: E402


def timed(config, setup, params, dataset):
  """(likelihood fields, seconds of the second call)."""
  evaluate.model_likelihood(config, setup, params, dataset, config.seed)
  t0 = time.perf_counter()
  out = evaluate.model_likelihood(config, setup, params, dataset, config.seed)
  return out, time.perf_counter() - t0


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--workdir", required=True, help="a trained run's workdir")
  ap.add_argument("--steps", required=True, help="checkpoint steps, joined by +")
  ap.add_argument("--heun", default="8+16+32", help="Heun step counts, joined by + (or empty)")
  ap.add_argument("--rtol", default="1e-4", help="tighter tsit5 tolerances, joined by + "
                  "(is the default converged?)")
  ap.add_argument("--num", type=int, default=500, help="points of each split")
  args = ap.parse_args()
  mesh = sharding.make_mesh()
  for step in (int(s) for s in args.steps.split("+")):
    config, setup, state, _ = workdir_lib.load(args.workdir, step, mesh)
    config = configlib.with_overrides(config, {"eval.nll_num": args.num})
    dataset = data.load(config.data, config.seed)
    ref, ref_s = timed(config, setup, state["ema"], dataset)
    settings = [("reference", {})] + [
        (f"heun-{k}", {"eval.nll_solver": "heun", "eval.nll_steps": int(k)})
        for k in args.heun.split("+") if k] + [
        (f"tsit5-{r}", {"eval.nll_solver": "tsit5", "eval.nll_steps": 0,
                        "eval.nll_rtol": float(r)}) for r in args.rtol.split("+") if r]
    for name, over in settings:
      if over:
        out, sec = timed(configlib.with_overrides(config, over), setup, state["ema"], dataset)
      else:
        out, sec = ref, ref_s
      print(json.dumps({
          "bench": "likelihood_solvers", "step": step, "setting": name,
          "method": out["nll_method"], "seconds": round(sec, 2),
          "speedup": round(ref_s / sec, 2), "test_nll": out["test_nll"],
          "nll_gap": out["nll_gap"], "test_nll_minus_ref": out["test_nll"] - ref["test_nll"],
          "nll_gap_minus_ref": out["nll_gap"] - ref["nll_gap"],
          "ref_test_nll_se": ref["test_nll_se"], "ref_nll_gap_se": ref["nll_gap_se"],
          "points": [out["test_nll_num"], out["train_nll_num"]]}), flush=True)


if __name__ == "__main__":
  main()
