"""Draws samples from the EMA weights of the newest checkpoint in --workdir.

  python scripts/sample.py --workdir runs/default --num 64   # -> runs/default/samples.png
"""
import os

from absl import app, flags

from dit_jax import cli, sampling

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "A training workdir.")
flags.DEFINE_integer("num", 64, "Number of samples.")
flags.DEFINE_integer("seed", 0, "Sampling seed.")
flags.DEFINE_enum("method", None, ["ddpm", "ddim", "heun"], "Sampler (default: the config's).")
flags.DEFINE_integer("steps", None, "Sampling steps (default: the config's).")
flags.DEFINE_float("guidance", None, "Classifier-free guidance scale (conditional models).")
flags.DEFINE_string("out", None, "Output PNG (default: WORKDIR/samples.png).")
flags.mark_flags_as_required(["workdir"])


def main(argv):
  del argv
  cli.setup()
  with cli.friendly_errors():
    path = FLAGS.out or os.path.join(FLAGS.workdir, "samples.png")
    step = sampling.sample_to_png(FLAGS.workdir, path, num=FLAGS.num, seed=FLAGS.seed,
                               method=FLAGS.method, steps=FLAGS.steps,
                               guidance=FLAGS.guidance)
  print(f"wrote {FLAGS.num} samples of step {step} to {path}")


if __name__ == "__main__":
  app.run(main)
