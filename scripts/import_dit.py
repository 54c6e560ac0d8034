"""Imports a facebookresearch/DiT checkpoint into a new dit_jax workdir.

  python scripts/import_dit.py --checkpoint DiT-XL-2-256x256.pt --workdir runs/dit-xl2 \
      --vae sd-vae-ft-ema/diffusion_pytorch_model.safetensors
  python scripts/sample.py --workdir runs/dit-xl2 --num 50000 --out samples/
Reads the file without torch; either the EMA state dict download.py serves or a
train.py checkpoint ({"model", "ema", ...}). docs/DIT_ECOSYSTEM.md says what is kept.
"""
from absl import app, flags

from dit_jax import cli, dit_import

FLAGS = flags.FLAGS
flags.DEFINE_string("checkpoint", None, "A facebookresearch/DiT .pt file.")
flags.DEFINE_string("workdir", None, "The new workdir (must not exist or be empty).")
flags.DEFINE_integer("heads", None, "Attention heads per block; only for sizes other "
                     "than DiT's S/B/L/XL, whose head counts are known.")
flags.DEFINE_string("data", "imagenet2012", "config.data.name the workdir trains and "
                    "evaluates on (images; with --vae they are encoded into latents).")
flags.DEFINE_string("vae", None, "The autoencoder of the model's latents (diffusers "
                    ".safetensors, e.g. sd-vae-ft-ema): recorded in the config, so "
                    "sampling decodes and training encodes with it.")
flags.mark_flags_as_required(["checkpoint", "workdir"])


def main(argv):
  del argv
  cli.setup()
  with cli.friendly_errors():
    config, arch, learn_sigma = dit_import.import_checkpoint(
        FLAGS.checkpoint, FLAGS.workdir, heads=FLAGS.heads, data_name=FLAGS.data,
        vae=FLAGS.vae)
  print(f"imported {FLAGS.checkpoint} as {config.model.variant} (hidden {arch.hidden}, "
        f"depth {arch.depth}, heads {arch.heads[0]}) on {arch.image_size}x{arch.image_size}"
        f"x{arch.channels}, {arch.num_classes} classes"
        + ("; learn_sigma's variance channels dropped (eps only)" if learn_sigma else "")
        + f" -> {FLAGS.workdir}")


if __name__ == "__main__":
  app.run(main)
