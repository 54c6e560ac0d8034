"""Runs the sweeps a study spec plans (docs/results/PLAN.md), several at a time, resumably.

  python scripts/run_study.py --config configs/study/pruning.py:root=runs --status
  python scripts/run_study.py --config configs/study/pruning.py:root=runs --jobs 2
  python scripts/run_study.py --config ... --jobs 2 --only frontier_gmm32_s10,frontier_digits_s10
then, when every sweep has finished:
  python scripts/results.py --config configs/study/pruning.py:root=runs

Each unfinished sweep runs as its own `scripts/sweep.py` process on its share of the
cores (`--jobs` shares), its output appended to ROOT/WORKDIR.log. Stopped (Ctrl-C,
SIGTERM) or rebooted, the same command resumes every sweep where it stands. `--status`
prints each sweep's progress and command and runs nothing; no metric is read, so
pre-registered sweeps can be watched without seeing their results.
"""
import os
import sys

from absl import app, flags

from dit_jax import cli, configlib
from dit_jax.study import plan

FLAGS = flags.FLAGS
flags.DEFINE_string("config", None, "A study spec (configs/study/*.py), path.py:root=ROOT.")
flags.DEFINE_integer("jobs", 1, "Sweeps at a time, each on its own share of the cores.")
flags.DEFINE_list("only", None, "Planned sweeps (their workdir names, comma-separated) to "
                  "run now, in this order; the others wait for another command or machine.")
flags.DEFINE_bool("status", False, "Print each planned sweep's progress and command; run "
                  "nothing.")
flags.mark_flags_as_required(["config"])


def main(argv):
  del argv
  cli.setup()
  with cli.friendly_errors():
    path, spec = configlib.load_spec(FLAGS.config)
    sweeps = plan.planned(spec, FLAGS.only)
    if not sweeps:
      raise configlib.ConfigError(f"{path} plans no sweeps (no section has `sweeps`).")
    if FLAGS.status:
      for s in sweeps:
        print(f"{s['workdir']} ({s['section']} {s['name']}): "
              f"{plan.describe(plan.progress(spec, s))}")
        print(f"  python scripts/sweep.py --config {s['config']} --workdir "
              f"{os.path.join(spec.root, s['workdir'])}")
      return
    code = plan.run(spec, FLAGS.jobs, say=lambda line: print(line, flush=True),
                    only=FLAGS.only)
  sys.exit(code)


if __name__ == "__main__":
  app.run(main)
