"""Runs a sweep file's points (resumable) and writes WORKDIR/sweep.csv and a plot.

  python scripts/sweep.py --config configs/sweeps/prune_ratio.py --workdir runs/sweep
  python scripts/sweep.py --config configs/sweeps/prune_ratio.py:data=gmm,seeds=3 --workdir W
"""
from absl import app, flags

from dit_jax import cli, sweep

FLAGS = flags.FLAGS
flags.DEFINE_string("config", None, "A sweep file with get_config(arg) and get_sweep(arg), "
                    "optionally path.py:arg.")
flags.DEFINE_string("workdir", None, "Where the points' workdirs and sweep.csv go.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  del argv
  cli.setup()
  with cli.friendly_errors():
    _, _, summary = sweep.run_sweep(FLAGS.config, FLAGS.workdir)
  print(summary)
  print(f"wrote {FLAGS.workdir}/sweep.csv, sweep_steps.csv, sweep_summary.md and sweep.png")


if __name__ == "__main__":
  app.run(main)
