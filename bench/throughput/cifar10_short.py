"""A shortened Table 1 run (configs/cifar10_5k.py) on a GPU: what it costs, what it measures.

  python bench/throughput/cifar10_short.py --out runs/cifar10_short            # on a GPU machine
  python bench/throughput/cifar10_short.py --out /tmp/c --runlocal --allow_cpu  # a check of the script
Trains S/2 on the 5k subset for --steps, evaluates it (the `original` row), then prunes
20% of the heads by head_grad, random and select_taylor (ours), and 0% (the control), fine-
tunes each --ft steps and evaluates it, every evaluation with `fid`. It uses CIFAR-10
where it is prepared in --data_dir, else the offline `crops` dataset (a device machine
may have no network to fetch CIFAR-10); `data` in the record says which. Writes
OUT/record.json (and prints it): device, versions, wall time of each phase, measured
train steps/s and the full 200,000-step run projected from it, and each row's metrics.
Needs the converted FID weights (python scripts/convert_fid_weights.py) copied along.
"""
import argparse
import json
import os
import subprocess
import sys
import time

import jax
import numpy as np
import tensorflow_datasets as tfds

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)
from configs import cifar10_5k  # noqa: E402
from dit_jax import configlib, pruning, train, writers  # noqa: E402

ROWS = (("control", "random", 0.0), ("head_grad", "head_grad", 0.2),
        ("random", "random", 0.2), ("select_taylor", "select_taylor", 0.2))
KEYS = ("step", "fid", "fid_num_samples", "mem_ratio", "fd", "precision", "recall",
        "num_params", "flops_per_image", "sample_images_per_sec")


def base_config(args):
  config = cifar10_5k.get_config("runlocal" if args.runlocal else None)
  over = {"data.data_dir": args.data_dir, "train.steps": args.steps, "eval.num": args.num,
          "checkpoint.every": args.steps, "sample.every": 0, "eval.at_end": True}
  if not tfds.builder("cifar10", data_dir=args.data_dir).is_prepared():
    # crops has 5,000 records: a smaller subset and test split fit in it
    over.update({"data.name": "crops", "data.n_train": min(config.data.n_train, 2000),
                 "data.n_select": min(config.data.n_select, 500),
                 "data.n_test": min(config.data.n_test, 2000)})
  return configlib.with_overrides(config, over)


def steps_per_sec(workdir, after=0):
  rates = [r["train/steps_per_sec"] for r in writers.read_metrics(workdir)
           if "train/steps_per_sec" in r and r["step"] > after]
  return float(np.median(rates[1:] or rates)) if rates else None  # the first holds compiles


def summary(run, wall):
  return dict({k: run.summary.get(k) for k in KEYS}, wall_s=wall)


def nvidia_smi():
  try:
    return subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version",
                           "--format=csv,noheader"], capture_output=True, text=True,
                          timeout=30).stdout.strip()
  except (OSError, subprocess.SubprocessError):
    return None


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--out", required=True)
  parser.add_argument("--data_dir", default=None)
  parser.add_argument("--steps", type=int, default=2000)
  parser.add_argument("--ft", type=int, default=500)
  parser.add_argument("--num", type=int, default=2000, help="samples per evaluation")
  parser.add_argument("--runlocal", action="store_true")
  parser.add_argument("--allow_cpu", action="store_true")
  parser.add_argument("--rows", default=",".join(r[0] for r in ROWS),
                      help="the pruned rows to run, by name (the base row always runs)")
  args = parser.parse_args()
  platform = jax.devices()[0].platform
  if platform != "gpu" and not args.allow_cpu:
    sys.exit(f"no GPU here (jax sees {platform}); pass --allow_cpu to run anyway.")
  config = base_config(args)
  record = {"bench": "cifar10_short", "device": jax.devices()[0].device_kind,
            "num_devices": jax.device_count(), "nvidia_smi": nvidia_smi(),
            "jax": jax.__version__, "data": config.data.name, "variant": config.model.variant,
            "n_train": config.data.n_train, "n_test": config.data.n_test,
            "steps": args.steps, "ft_steps": args.ft, "rows": {}}
  base = os.path.join(args.out, "base")
  t0 = time.perf_counter()
  run = train.train_and_evaluate(config, base)
  record["rows"]["original"] = summary(run, time.perf_counter() - t0)
  rate = steps_per_sec(base)
  record["train_steps_per_sec"] = rate
  full = cifar10_5k.get_config().train.steps
  record["projected_full_run_h"] = full / rate / 3600 if rate else None
  for name, method, ratio in (r for r in ROWS if r[0] in args.rows.split(",")):
    t0 = time.perf_counter()
    dst = os.path.join(args.out, name)
    cfg, rec = pruning.prune_workdir(base, dst, method=method, ratio=ratio, mlp_ratio=0.0)
    cfg.train.steps = rec["step"] + args.ft
    run = train.train_and_evaluate(cfg, dst)
    record["rows"][name] = dict(summary(run, time.perf_counter() - t0), heads=rec["heads"],
                                train_steps_per_sec=steps_per_sec(dst, rec["step"]))
  text = json.dumps(record, indent=1)
  print(text)
  with open(os.path.join(args.out, "record.json"), "w", encoding="utf-8") as f:
    f.write(text + "\n")


if __name__ == "__main__":
  main()
