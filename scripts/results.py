"""docs/RESULTS.md and its figures and csv files, from the sweeps a study spec names.

  python scripts/results.py --config configs/study/pruning.py:root=runs      # from workdirs
  python scripts/results.py --config configs/study/pruning.py:from_csv       # from docs/results/*.csv
"""
from absl import app, flags

from dit_jax import cli, configlib
from dit_jax.study import document

FLAGS = flags.FLAGS
flags.DEFINE_string("config", None, "A study spec (configs/study/*.py), optionally path.py:arg.")
flags.mark_flags_as_required(["config"])


def main(argv):
  del argv
  cli.setup()
  with cli.friendly_errors():
    path, spec = configlib.load_spec(FLAGS.config)
    target = document.write(spec, path)
  print(f"wrote {target} and {spec.out}/results/")


if __name__ == "__main__":
  app.run(main)
