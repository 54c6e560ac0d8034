"""One metric of several runs over training, in one plot.

  python scripts/plot_runs.py --workdirs runs/gmm_n64,runs/gmm_n2048 --labels n=64,n=2048 \
      --key memo_ema/index --out docs/gmm_index.png
"""
from absl import app, flags

from dit_jax import report, writers

FLAGS = flags.FLAGS
flags.DEFINE_list("workdirs", None, "Training workdirs.")
flags.DEFINE_list("labels", None, "A label per workdir (default: the workdirs).")
flags.DEFINE_string("key", "memo_ema/index", "A metric name of metrics.jsonl.")
flags.DEFINE_string("title", None, "Plot title.")
flags.DEFINE_string("out", None, "Output PNG.")
flags.mark_flags_as_required(["workdirs", "out"])


def main(argv):
  del argv
  labels = FLAGS.labels or FLAGS.workdirs
  if len(labels) != len(FLAGS.workdirs):
    raise app.UsageError("--labels needs one label per workdir.")
  runs = [writers.read_metrics(w) for w in FLAGS.workdirs]
  print("wrote", report.compare_runs(runs, labels, FLAGS.key, FLAGS.out, FLAGS.title))


if __name__ == "__main__":
  app.run(main)
