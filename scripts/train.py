"""Trains a DiT; resumes from the newest checkpoint in --workdir.

  python scripts/train.py --config configs/default.py --workdir runs/default
  python scripts/train.py --config configs/gmm.py:n=64 --workdir runs/gmm64 \
      --config.train.steps=4000
"""
from absl import app, flags
from ml_collections import config_flags

from dit_jax import cli, seeds

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Config file, optionally path.py:arg.",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Where checkpoints, metrics and plots go.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  del argv
  cli.setup()
  with cli.friendly_errors():
    run = seeds.train_and_evaluate(FLAGS.config, FLAGS.workdir)  # any config.seeds
  cli.finish(run)


if __name__ == "__main__":
  app.run(main)
