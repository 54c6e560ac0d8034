"""Evaluates the EMA weights of the newest checkpoint in --workdir.

  python scripts/evaluate.py --workdir runs/default          # -> eval.json, report/*.png
"""
import os

from absl import app, flags

from dit_jax import cli, evaluate

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "A training workdir.")
flags.DEFINE_integer("num", None, "Number of samples (default: config.eval.num).")
flags.DEFINE_integer("seed", 0, "Sampling seed.")
flags.DEFINE_integer("step", None, "Checkpoint step (default: the newest).")
flags.mark_flags_as_required(["workdir"])


def main(argv):
  del argv
  cli.setup()
  # the run writes eval.json too: under its lock, never beside it
  with cli.friendly_errors(), cli.locked_workdir(FLAGS.workdir, "scripts/evaluate.py"):
    summary = evaluate.evaluate_workdir(FLAGS.workdir, FLAGS.num, FLAGS.seed, FLAGS.step)
  print(evaluate.format_summary(summary))
  print(f"wrote {os.path.join(FLAGS.workdir, 'eval.json')} and "
        f"{os.path.join(FLAGS.workdir, 'report')}/")


if __name__ == "__main__":
  app.run(main)
