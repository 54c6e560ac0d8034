"""Train step of the default model with and without the residual cotangent fence.

  python bench/throughput/cotangent_fence.py                  # one JSON object per batch size
  python bench/throughput/cotangent_fence.py --batches 128

dit._cotangent_fence passes the residual stream's cotangent through an identity
product where each layer norm reads the stream, so that XLA:CPU computes the
backward chain once instead of fusing it, recomputed, into every consumer. This
compiles the same jitted step (forward + backward + AdamW + EMA) both ways and
times them alternately; `speedup` is unfenced time / fenced time and
`extra_flops` XLA's count of what the identity products add.
"""
import argparse
import json
import os
import sys

import jax

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)
from bench import timing  # noqa: E402
from configs import default  # noqa: E402
from dit_jax import config_check, configlib, sharding  # noqa: E402
from dit_jax.models import dit  # noqa: E402


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--batches", default="32,128,512", help="comma-separated batch sizes")
  ap.add_argument("--reps", type=int, default=7,
                  help="timed repeats (each max(5, 2048 // batch) training steps)")
  args = ap.parse_args()
  config = config_check.finalize(default.get_config())
  mesh = sharding.make_mesh()
  arch = dit.arch_from_config(config.model, config.data.image_size, config.data.channels, 0)
  with_fence = lambda setting: configlib.with_overrides(config, {"model.fence": setting})
  for b in [int(s) for s in args.batches.split(",")]:
    (plain, f_plain) = timing.train_call(with_fence("off"), arch, mesh, b)
    (fenced, f_fenced) = timing.train_call(with_fence("on"), arch, mesh, b)
    t_plain, t_fenced = (t / timing.steps_per_call(b)
                         for t in timing.paired(plain, fenced, args.reps))
    print(json.dumps({
        "bench": "cotangent_fence", "device": jax.devices()[0].device_kind,
        "batch": b, "train_step_s_unfenced": round(t_plain, 5),
        "train_step_s_fenced": round(t_fenced, 5), "speedup": round(t_plain / t_fenced, 4),
        "extra_flops": round(f_fenced / f_plain - 1, 4),
        "fenced_by_default": dit.resolve_fence("auto")}), flush=True)


if __name__ == "__main__":
  main()
