"""The study wing: sweeps over the training library, and what docs/RESULTS.md says of them.

It sits above the library (dit_jax.train, .workdir, .report, ...) and the library never
imports it, so studies can grow without touching the trainer.

  sweepdir    a sweep workdir's files (sweep.csv, sweep_steps.csv, ...): their one owner
  sweep       runs a sweep file's points, resumably
  stats       Student-t intervals over seeds, paired by seed
  compare     methods at equal budget: comparisons, the table, verdicts, durability plot
  tracker     does the gap tracker predict memorization? (base runs)
  capacity    the width x n grid, the ground-truth capacity W*, the capacity search
  document    docs/RESULTS.md from a study spec (configs/study/*.py)
"""
