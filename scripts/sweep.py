"""Runs a sweep file's points (resumable) and writes WORKDIR/sweep.csv and a plot.

  python scripts/sweep.py --config configs/sweeps/prune_ratio.py --workdir runs/sweep
  python scripts/sweep.py --config configs/sweeps/prune_ratio.py:data=gmm,seeds=3 --workdir W
  python scripts/sweep.py --config ... --workdir W --status   # progress, no metrics
"""
from absl import app, flags

from dit_jax import cli
from dit_jax.study import sweep, sweepdir

FLAGS = flags.FLAGS
flags.DEFINE_string("config", None, "A sweep file with get_config(arg) and get_sweep(arg), "
                    "optionally path.py:arg.")
flags.DEFINE_string("workdir", None, "Where the points' workdirs and sweep.csv go.")
flags.DEFINE_enum("seed_parallel", "auto", ["auto", "on", "off"],
                  "Train points that differ only in their seed together in one program "
                  "(config.seeds). auto: on GPU/TPU, off on a CPU, where the vmapped step "
                  "is slower than one seed's (BENCHMARKS.md).")
flags.DEFINE_bool("status", False, "Print where each point stands (done, started at step "
                  "N, waiting) and exit: nothing runs and no metric is read.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  del argv
  cli.setup()
  if FLAGS.status:
    with cli.friendly_errors():
      points = sweep.status(FLAGS.config, FLAGS.workdir)
    for p in points:
      where = f"step {p['step']} of {p['steps']}" if p["state"] == "started" else ""
      print(f"{p['state']:8s} {p['name']} {where}".rstrip())
    done = sum(p["state"] == "done" for p in points)
    print(f"{done} of {len(points)} points done")
    return
  with cli.friendly_errors():
    _, _, summary = sweep.run_sweep(FLAGS.config, FLAGS.workdir,
                                    seed_parallel=FLAGS.seed_parallel)
  print(summary)
  files = (sweepdir.POINTS, sweepdir.STEPS, sweepdir.SUMMARY, sweepdir.PLOT)
  print(f"wrote {', '.join(sweepdir.path(FLAGS.workdir, f) for f in files)}")


if __name__ == "__main__":
  app.run(main)
