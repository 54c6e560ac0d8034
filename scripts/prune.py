"""Prunes the newest checkpoint of --workdir into a new workdir, then fine-tunes it.

  python scripts/prune.py --workdir runs/default --ratio 0.2 --method head_grad
  python scripts/prune.py --workdir runs/default --ratio 0.2 --mlp_ratio 0.5 \
      --method contrast --finetune_steps 1000 --out runs/default-contrast [--control]
The source workdir is only read. --control also fine-tunes the unpruned model from the
same step into OUT/control, for comparison; without it no control is trained.
"""
from absl import app, flags

from dit_jax import cli, pruning, train

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "The trained workdir to prune (read only).")
flags.DEFINE_float("ratio", 0.2, "Fraction of attention heads to remove.")
flags.DEFINE_float("mlp_ratio", 0.0, "Fraction of MLP hidden units to remove.")
flags.DEFINE_enum("method", "select_taylor", list(pruning.METHODS), "Importance method.")
flags.DEFINE_enum("target", "ratio", ["ratio", "capacity"],
                  "'capacity': search the smallest width that keeps held-out loss.")
flags.DEFINE_integer("finetune_steps", 0, "Training steps after pruning.")
flags.DEFINE_bool("control", False, "Also fine-tune the unpruned model the same steps from "
                  "the same checkpoint (OUT/control), to compare against.")
flags.DEFINE_string("out", None, "Output workdir (default: WORKDIR-METHOD-RATIO).")
flags.mark_flags_as_required(["workdir"])


def main(argv):
  del argv
  cli.setup()
  out = FLAGS.out or f"{FLAGS.workdir.rstrip('/')}-{FLAGS.method}-{FLAGS.ratio:g}"
  with cli.friendly_errors():
    config, record = pruning.prune_workdir(
        FLAGS.workdir, out, ratio=FLAGS.ratio, mlp_ratio=FLAGS.mlp_ratio,
        method=FLAGS.method, target=FLAGS.target, finetune_steps=FLAGS.finetune_steps,
        control=FLAGS.control)
    print(f"pruned step {record['step']}: heads {record['heads_before']} -> {record['heads']}, "
          f"mlp {record['mlp_before']} -> {record['mlp']}, params "
          f"{record['num_params_before']} -> {record['num_params']}; wrote {out}")
    if FLAGS.finetune_steps:
      config.train.steps = record["step"] + FLAGS.finetune_steps
      run = train.train_and_evaluate(config, out)
      cli.finish(run)


if __name__ == "__main__":
  app.run(main)
