"""FID of sample shards against an ADM-format reference batch, with the offline Inception.

  python scripts/fid.py --samples samples/ --reference VIRTUAL_imagenet256_labeled.npz
--samples: the folder scripts/sample.py --out wrote (its shards), or one .npz with arr_0.
--reference: arr_0 images, or precomputed mu / sigma (used when present, as the ADM
evaluator does; --reference_from=images recomputes them with this Inception).
Prints one JSON line and writes it to fid.json beside the samples.
"""
import json
import os

from absl import app, flags

from dit_jax import adm, cli, configlib, fid, workdir

FLAGS = flags.FLAGS
flags.DEFINE_string("samples", None, "Folder of shards, or an .npz with arr_0.")
flags.DEFINE_string("reference", None, "ADM reference batch (.npz).")
flags.DEFINE_enum("reference_from", "auto", ["auto", "stats", "images"],
                  "auto: the file's mu/sigma when present, else its images.")
flags.DEFINE_string("weights", configlib.base_config().eval.fid_weights,
                    "Converted Inception weights (scripts/convert_fid_weights.py).")
flags.DEFINE_integer("batch", 50, "Images per Inception call.")
flags.mark_flags_as_required(["samples", "reference"])


def main(argv):
  del argv
  cli.setup()
  with cli.friendly_errors():
    weights = os.path.expanduser(FLAGS.weights)
    net = fid.load(weights)
    cache = os.path.join(os.path.dirname(weights), "fid_stats")
    ref = adm.reference_stats(net, FLAGS.reference, FLAGS.reference_from, cache, FLAGS.batch)
    value, num = adm.fid_of_samples(net, FLAGS.samples, ref, FLAGS.batch)
  row = {"fid": value, "num_samples": num, "samples": FLAGS.samples,
         "reference": FLAGS.reference, "reference_from": FLAGS.reference_from}
  print(json.dumps(row))
  folder = FLAGS.samples if os.path.isdir(FLAGS.samples) else os.path.dirname(FLAGS.samples)
  workdir.atomic_write(os.path.join(folder, "fid.json"), json.dumps(row, indent=2))


if __name__ == "__main__":
  app.run(main)
