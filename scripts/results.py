"""docs/RESULTS.md and its figures and csv files, from the sweeps a results spec names.

  python scripts/results.py --config configs/results/pruning.py:root=/work/runs
  python scripts/results.py --config configs/results/pruning.py:from_csv   # from docs/results/*.csv
"""
import os

from absl import app, flags

from dit_jax import cli, configlib, results, sweep, workdir

FLAGS = flags.FLAGS
flags.DEFINE_string("config", None, "A results spec (configs/results/*.py), optionally path.py:arg.")
flags.mark_flags_as_required(["config"])

METRICS = ("mem_ratio", "fd", "nll", "precision", "recall")


def _rows(spec, name, sources, kind="steps"):
  """The merged rows of `sources` (workdirs or csv files under root), copied to
  OUT/results/NAME_KIND.csv, or that copy when rebuilding from csv."""
  csv_path = os.path.join(spec.out, "results", f"{name}_{kind}.csv")
  if spec.from_csv:
    return results.load([csv_path]) if sources else []
  rows = results.load([os.path.join(spec.root, d) for d in sources])
  if sources:
    results.write_csv(rows, csv_path)
  return rows


def _study(spec, name, study):
  rows = _rows(spec, name, study["workdirs"])
  earlier = _rows(spec, name, study["earlier"], "earlier")
  out = [f"## {study['title']}", "", "Made by (workdirs relative to `root`):", "", "```"]
  out += list(study["commands"]) + ["```", "",
                                    f"Rows: `{spec.out}/results/{name}_steps.csv`. Seeds per "
                                    f"point group: {results.counts(rows)}.", ""]
  if earlier:
    out += [f"Rows of an earlier run of some of these points, for comparison only: "
            f"`{spec.out}/results/{name}_earlier.csv` ({results.counts(earlier)})."]
    out += results.rerun_lines(rows, earlier) + [""]
  for ft in spec.tables:
    when = (f"{ft} fine-tuning steps after the prune" if ft else
            "right after the prune, before any fine-tuning")
    out += [f"### Equal budget, {when}", "",
            "Mean ± 95% t-interval over seeds; `vs control` / `vs random`: the paired "
            "per-seed difference (this row minus the other) and its 95% interval.", "",
            results.table(rows, ft, METRICS), ""]
  out += ["### Verdict", ""] + results.verdicts(rows, spec.ours, spec.fts, spec.budget)
  out += [""] + [results.target_line(rows, spec.ours, spec.budget, spec.fts)] + [""]
  png = sweep.plot(rows, os.path.join(spec.out, "results", f"{name}_durability.png"))
  out += ["### Durability: mem_ratio over fine-tuning", "",
          f"![durability]({os.path.relpath(png, spec.out)})", ""]
  trows, old = results.tracker_rows(rows, earlier)
  track = results.tracker_vs_memorization(trows)
  png = results.tracker_plot(track, os.path.join(spec.out, "results", f"{name}_tracker.png"),
                             f"{name}: base runs")
  out += ["### Does the tracker predict memorization? (base runs)", "",
          f"![tracker]({os.path.relpath(png, spec.out)})", ""] + results.tracker_lines(track)
  if old:
    out.append(f"- seeds {'+'.join(map(str, old))}: the earlier run's base series (this "
               "study's reruns of them were evaluated at one step only).")
  return out + [""]


def _points(spec, name, workdirs):
  """The sweeps' sweep.csv rows (one per point, with its pruned shape), merged, copied to
  OUT/results/NAME_points.csv (read back from there when rebuilding from csv)."""
  csv_path = os.path.join(spec.out, "results", f"{name}_points.csv")
  if spec.from_csv:
    return sweep.read_csv(csv_path)
  rows = results.merge([sweep.read_csv(os.path.join(spec.root, d, "sweep.csv"))
                        for d in workdirs])
  if workdir.is_writer():
    sweep.write_csv(rows, csv_path, sweep.COLUMNS)
  return rows


def _capacity(spec, name, cap):
  """A capacity grid, its oracle W* (or a proxy for it), and where the capacity search
  lands against it. cap["oracle"]: "excess" (the held-out excess over the true score's
  loss, known density) or "heldout" (the held-out loss itself, the proxy elsewhere)."""
  cells = results.grid_cells(_rows(spec, f"{name}_grid", cap["grid"]))
  if not spec.from_csv:  # the cells' sweep.csv rows, copied beside their step rows
    _points(spec, f"{name}_grid", cap["grid"])
  excess = cap.get("oracle", "excess") == "excess"
  key = results.EXCESS if excess else results.HELDOUT
  out = [f"## {cap['title']}", "", "Made by (workdirs relative to `root`):", "", "```"]
  out += list(cap["commands"]) + ["```", "", cap["notes"], ""]
  per_n = {}
  for (n, _), c in sorted(cells.items()):
    per_n.setdefault(n, set()).add(c["seeds"])
  out += ["Seeds per cell, by n: " + ", ".join(
      f"n={n}: {'/'.join(map(str, sorted(k)))}" for n, k in per_n.items()) + ".", ""]
  tables = [("mem_ratio", "mem_ratio (1,000 samples)"), ("nll", "nll of the samples"),
            (results.EXCESS, "held-out loss's excess over the true score's (EMA)"),
            (results.HELDOUT, "held-out loss (EMA)"), ("fd", "fd"), ("precision", "precision"),
            ("recall", "recall")]
  for k, label in tables:
    if any(k in c for c in cells.values()):
      digits = 4 if k == results.HELDOUT and not excess else 3
      out += [f"### {label}, by n (rows) and width (columns)", "",
              results.grid_table(cells, k, digits), ""]
  label = "held-out excess over gt_loss" if excess else "held-out loss (EMA)"
  png = results.grid_plot(cells, os.path.join(spec.out, "results", f"{name}_grid.png"),
                          cap["data"], key, label)
  out += [f"![{name} grid]({os.path.relpath(png, spec.out)})", ""]
  star = "W*" if excess else "W"  # the ground-truth capacity, or its proxy
  stars, lines = _oracle(spec, name, cap, cells, key, star)
  onset = results.memorization_onset(cells)
  out += lines + ["Memorization onset (the smallest width with mem_ratio >= 0.1) per n: " +
                  ", ".join(f"n={n}: {'none' if w is None else f'{w:g}'}"
                            for n, w in onset.items()) + ".", ""]
  return out + _search(spec, name, cap, sorted({w for _, w in cells}), stars, star)


def _oracle(spec, name, cap, cells, key, star):
  """{tol: W(tol)} read off the grid's largest n, and the lines that say how."""
  tols = cap.get("tols", spec.capacity_tols)
  stars = {t: results.w_star(cells, t, key=key) for t in tols}
  top = max(n for n, _ in cells)
  if key == results.EXCESS:
    loss_stars = {t: results.w_star(cells, t, key=results.HELDOUT) for t in tols}
    out = ["### The ground-truth capacity W*", "",
           f"At n = {top} (standing in for the density): the smallest width whose held-out "
           "excess over gt_loss is within (1 + tol) of the full width's: " +
           ", ".join(f"W*({t:g}) = {w:g}" for t, w in stars.items()) + "; on the held-out "
           "loss itself (the capacity search's yardstick): " +
           ", ".join(f"{w:g} at tol {t:g}" for t, w in loss_stars.items()) + ".", ""]
  else:
    out = ["### The proxy oracle", "",
           f"No density is known, so the proxy is read off the largest n ({top}): the "
           "smallest width whose held-out loss is within (1 + tol) of the full width's, "
           "where widening stops improving it: " +
           ", ".join(f"W({t:g}) = {w:g}" for t, w in stars.items()) + ".", ""]
  if cap.get("earlier"):  # the same cells from a shorter, earlier run: shown, never merged
    before = results.grid_cells(_rows(spec, f"{name}_grid", cap["earlier"], "earlier"))
    out += [f"### {cap['earlier_title']}", "",
            f"Rows: `{spec.out}/results/{name}_grid_earlier.csv`.", "",
            results.grid_table(before, key), "", "Read off these rows the same way: " + ", ".join(
                f"{star}({t:g}) = {results.w_star(before, t, key=key):g}" for t in tols) + ".",
            ""]
  return stars, out


def _search(spec, name, cap, widths, stars, star):
  """The capacity search's widths against W at each tolerance, and the chosen model
  against the control and random at its width, judged at cap's `tol`."""
  tol = cap.get("tol", spec.capacity_tol)
  budget = cap.get("budget", "cap")
  keep = lambda r: r["budget"] == budget or r["method"] == sweep.CONTROL
  steps = [r for r in _rows(spec, f"{name}_search", cap["search"]) if keep(r)]
  points = [r for r in _points(spec, f"{name}_search", cap["search"]) if keep(r)]
  by_tol = {t: results.search_lines(points, widths, w) for t, w in stars.items()}
  found = by_tol[tol]
  out = [f"### The capacity search against {star}({tol:g}) = {stars[tol]:g}", "",
         f"Grid steps from {star} (heads / MLP) at each tolerance.", "",
         "| seed | heads kept | MLP units kept | kept heads | kept MLP | " +
         " | ".join(f"{star}({t:g}) = {w:g}" for t, w in stars.items()) + " |",
         "|---" * (5 + len(stars)) + "|"]
  for i, f in enumerate(found):
    out.append(f"| {f['seed']} | {'+'.join(map(str, f['heads']))} | "
               f"{'+'.join(map(str, f['mlp']))} | {f['kept_heads']:.3f} | {f['kept_mlp']:.3f} | " +
               " | ".join(f"{o[i]['steps_heads']} / {o[i]['steps_mlp']}" for o in by_tol.values()) +
               " |")
  for ft in cap["fts"]:
    out += ["", f"### The chosen width against the control and `random` at the same width, "
            f"{ft} fine-tuning steps after the prune", "",
            "Mean ± 95% t-interval over seeds; differences paired per seed.", "",
            results.table(steps, ft, METRICS), "", f"Verdict at +{ft}:", ""]
    out += results.capacity_verdict(steps, found, ft, budget, star=star)
  return out + [""]


def main(argv):
  del argv
  cli.setup()
  with cli.friendly_errors():
    path, _, arg = FLAGS.config.partition(":")
    spec = configlib.load_config_file(path).get_config(arg or None)
    lines = ["# Results: pruning against memorization, at equal budget, over seeds", "",
             "Generated by `python scripts/results.py --config " + FLAGS.config + "`; do not "
             "edit by hand. Machine: " + spec.machine + ". Code: " + spec.code + ".", "",
             f"Ours: `{spec.ours}`; the verdict's budget: `{spec.budget}`. Paired intervals are "
             f"Student-t over seeds (`dit_jax/stats.py`); \"within noise\": the interval "
             "holds zero.", ""]
    for name, study in spec.studies.items():
      lines += _study(spec, name, study)
    for name, cap in (spec.get("capacity") or {}).items():
      lines += _capacity(spec, name, cap)
    ex = spec.explore
    rows = _rows(spec, "explore", ex["workdirs"])
    lines += [f"## {ex['title']}", "", "```"] + list(ex["commands"]) + ["```", "",
              "mem_ratio / fd at each fine-tuning step after the prune (+0: just pruned); one "
              "seed, so no interval: these chose what the seeds above test.", "",
              results.ideas_table(rows), ""]
    target = os.path.join(spec.out, "RESULTS.md")
    workdir.atomic_write(target, "\n".join(lines))
    print(f"wrote {target} and {spec.out}/results/")


if __name__ == "__main__":
  app.run(main)
