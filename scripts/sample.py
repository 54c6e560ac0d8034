"""Draws samples from the EMA weights of the newest checkpoint in --workdir.

  python scripts/sample.py --workdir runs/default --num 64   # -> runs/default/samples.png
  python scripts/sample.py --workdir runs/dit-xl2 --num 50000 --out samples/ \
      --vae sd-vae-ft-ema/diffusion_pytorch_model.safetensors --guidance 1.5 --merge
A folder --out gets ADM-format .npz shards (arr_0 uint8 NHWC, arr_1 labels), one per
--batch; run the same command again to resume, on every host of a multi-host run.
"""
import os

from absl import app, flags

from dit_jax import bulk_sampling, cli, sampling

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "A training workdir.")
flags.DEFINE_integer("num", 64, "Number of samples.")
flags.DEFINE_integer("seed", 0, "Sampling seed.")
flags.DEFINE_enum("method", None, ["ddpm", "ddim", "heun"], "Sampler (default: the config's).")
flags.DEFINE_integer("steps", None, "Sampling steps (default: the config's).")
flags.DEFINE_float("guidance", None, "Classifier-free guidance scale (conditional models).")
flags.DEFINE_string("out", None, "A .png grid (default: WORKDIR/samples.png), or a folder "
                    "for ADM-format .npz shards.")
flags.DEFINE_integer("batch", 256, "Shards: samples per jitted batch and per shard.")
flags.DEFINE_string("labels", None, "Shards: class labels (.npy, or .npz with arr_1); "
                    "default uniform over the classes.")
flags.DEFINE_string("vae", None, "Shards: the VAE .safetensors that decodes a latent "
                    "model's samples (diffusers format, e.g. sd-vae-ft-ema).")
flags.DEFINE_bool("merge", False, "Shards: also write one samples_NxHxWxC.npz when all are done.")
flags.DEFINE_integer("max_shards", None, "Shards: stop after this many new ones (for "
                     "preemptible jobs; run again to go on).")
flags.mark_flags_as_required(["workdir"])


def main(argv):
  del argv
  cli.setup()
  out = FLAGS.out or os.path.join(FLAGS.workdir, "samples.png")
  with cli.friendly_errors():
    if out.endswith(".png"):
      step = sampling.sample_to_png(FLAGS.workdir, out, num=FLAGS.num, seed=FLAGS.seed,
                                    method=FLAGS.method, steps=FLAGS.steps,
                                    guidance=FLAGS.guidance)
      print(f"wrote {FLAGS.num} samples of step {step} to {out}")
      return
    new, have, merged = bulk_sampling.sample_to_shards(
        FLAGS.workdir, out, FLAGS.num, batch=FLAGS.batch, seed=FLAGS.seed,
        method=FLAGS.method, steps=FLAGS.steps, guidance=FLAGS.guidance,
        labels=FLAGS.labels, vae=FLAGS.vae, merge=FLAGS.merge, max_shards=FLAGS.max_shards)
  print(f"wrote {new} shards; {have} in {out}" + (f"; merged into {merged}" if merged else ""))


if __name__ == "__main__":
  app.run(main)
