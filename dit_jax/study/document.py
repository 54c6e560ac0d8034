"""docs/RESULTS.md and its figures and csv files, from the sweeps a study spec names.

A spec (configs/study/*.py) lists each study's sweep workdirs and the commands that made
them. Their rows are merged by point name (the seeds of one dataset may have run as
separate sweep commands, one per core) and copied to OUT/results/NAME_*.csv; with
`from_csv` everything is rebuilt from those copies (and from the planned sweeps'
kept rows, dit_jax.study.plan), so the page needs no workdirs and
rerunning on the same rows gives the same file. Nothing in it is typed in by hand.
"""
import os

from dit_jax import workdir as workdir_lib
from dit_jax.study import capacity
from dit_jax.study import compare
from dit_jax.study import frontier
from dit_jax.study import headroom
from dit_jax.study import plan
from dit_jax.study import sweepdir
from dit_jax.study import tracker

METRICS = ("mem_ratio", "fd", "nll", "precision", "recall")


def _csv(spec, name, kind):
  return os.path.join(spec.out, "results", f"{name}_{kind}.csv")


def _all_kept(spec, sources):
  """Whether every source is a planned sweep with a kept copy (read even from csv)."""
  return bool(sources) and all(plan.kept(spec, d) for d in sources)


def _rows(spec, name, sources, kind="steps"):
  """The merged step rows of `sources` (workdirs or csv files under root, or kept
  copies), copied to OUT/results/NAME_KIND.csv, or that copy when rebuilding from csv."""
  if spec.from_csv and not _all_kept(spec, sources):
    return sweepdir.load([_csv(spec, name, kind)]) if sources else []
  rows = sweepdir.load([plan.rows_dir(spec, d) for d in sources])
  if sources:
    sweepdir.write_csv(rows, _csv(spec, name, kind), sweepdir.STEP_COLUMNS)
  return rows


def _points(spec, name, workdirs):
  """The sweeps' sweep.csv rows (one per point, with its pruned shape), merged, copied to
  OUT/results/NAME_points.csv (read back from there when rebuilding from csv)."""
  if spec.from_csv and not _all_kept(spec, workdirs):
    return sweepdir.read_csv(_csv(spec, name, "points"))
  rows = sweepdir.load([plan.rows_dir(spec, d) for d in workdirs], sweepdir.POINTS)
  sweepdir.write_csv(rows, _csv(spec, name, "points"), sweepdir.COLUMNS)
  return rows


def _figure(spec, png, alt):
  return f"![{alt}]({os.path.relpath(png, spec.out)})"


def _made_by(commands):
  return ["Made by (workdirs relative to `root`):", "", "```"] + list(commands) + ["```", ""]


def _study(spec, name, study):
  """One dataset's equal-budget study: tables, verdict, durability and the tracker."""
  rows = _rows(spec, name, study["workdirs"])
  earlier = _rows(spec, name, study["earlier"], "earlier")
  out = [f"## {study['title']}", ""] + _made_by(study["commands"])
  out += [f"Rows: `{spec.out}/results/{name}_steps.csv`. Seeds per point group: "
          f"{compare.counts(rows)}.", ""]
  if earlier:
    out += [f"Rows of an earlier run of some of these points, for comparison only: "
            f"`{spec.out}/results/{name}_earlier.csv` ({compare.counts(earlier)})."]
    out += compare.rerun_lines(rows, earlier) + [""]
  for ft in spec.tables:
    when = (f"{ft} fine-tuning steps after the prune" if ft else
            "right after the prune, before any fine-tuning")
    out += [f"### Equal budget, {when}", "",
            "Mean ± 95% t-interval over seeds; `vs control` / `vs random`: the paired "
            "per-seed difference (this row minus the other) and its 95% interval.", "",
            compare.table(rows, ft, METRICS), ""]
  out += ["### Verdict", ""] + compare.verdicts(rows, spec.ours, spec.fts, spec.budget)
  out += ["", compare.target_line(rows, spec.ours, spec.budget, spec.fts), ""]
  png = compare.durability_plot(rows, os.path.join(spec.out, "results",
                                                   f"{name}_durability.png"))
  out += ["### Durability: mem_ratio over fine-tuning", "", _figure(spec, png, "durability"), ""]
  trows, old = tracker.base_rows(rows, earlier)
  track = tracker.against_memorization(trows)
  png = tracker.plot(track, os.path.join(spec.out, "results", f"{name}_tracker.png"),
                     f"{name}: base runs")
  out += ["### Does the tracker predict memorization? (base runs)", "",
          _figure(spec, png, "tracker"), ""] + tracker.lines(track)
  if old:
    out.append(f"- seeds {'+'.join(map(str, old))}: the earlier run's base series (this "
               "study's reruns of them were evaluated at one step only).")
  return out + [""]


def _capacity(spec, name, cap):
  """A capacity grid, its oracle W* (or a proxy for it), and where the capacity search
  lands against it. cap["oracle"]: "excess" (the held-out excess over the true score's
  loss, known density) or "heldout" (the held-out loss itself, the proxy elsewhere)."""
  cells = capacity.grid_cells(_rows(spec, f"{name}_grid", cap["grid"]))
  if not spec.from_csv:  # the cells' sweep.csv rows, copied beside their step rows
    _points(spec, f"{name}_grid", cap["grid"])
  excess = cap.get("oracle", "excess") == "excess"
  key = capacity.EXCESS if excess else capacity.HELDOUT
  out = [f"## {cap['title']}", ""] + _made_by(cap["commands"]) + [cap["notes"], ""]
  per_n = {}
  for (n, _), c in sorted(cells.items()):
    per_n.setdefault(n, set()).add(c["seeds"])
  out += ["Seeds per cell, by n: " + ", ".join(
      f"n={n}: {'/'.join(map(str, sorted(k)))}" for n, k in per_n.items()) + ".", ""]
  tables = [("mem_ratio", "mem_ratio (1,000 samples)"), ("nll", "nll of the samples"),
            (capacity.EXCESS, "held-out loss's excess over the true score's (EMA)"),
            (capacity.HELDOUT, "held-out loss (EMA)"), ("fd", "fd"), ("precision", "precision"),
            ("recall", "recall")]
  for k, label in tables:
    if any(k in c for c in cells.values()):
      digits = 4 if k == capacity.HELDOUT and not excess else 3
      out += [f"### {label}, by n (rows) and width (columns)", "",
              capacity.grid_table(cells, k, digits), ""]
  label = "held-out excess over the true score's loss" if excess else "held-out loss (EMA)"
  png = capacity.grid_plot(cells, os.path.join(spec.out, "results", f"{name}_grid.png"),
                           cap["data"], key, label)
  out += [_figure(spec, png, f"{name} grid"), ""]
  star = "W*" if excess else "W"  # the ground-truth capacity, or its proxy
  stars, lines = _oracle(spec, name, cap, cells, key, star)
  onset = capacity.memorization_onset(cells)
  out += lines + ["Memorization onset (the smallest width with mem_ratio >= 0.1) per n: " +
                  ", ".join(f"n={n}: {'none' if w is None else f'{w:g}'}"
                            for n, w in onset.items()) + ".", ""]
  return out + _search(spec, name, cap, sorted({w for _, w in cells}), stars, star)


def _oracle(spec, name, cap, cells, key, star):
  """{tol: W(tol)} read off the grid's largest n, and the lines that say how."""
  tols = cap.get("tols", spec.capacity_tols)
  stars = {t: capacity.w_star(cells, t, key=key) for t in tols}
  top = max(n for n, _ in cells)
  if key == capacity.EXCESS:
    loss_stars = {t: capacity.w_star(cells, t, key=capacity.HELDOUT) for t in tols}
    out = ["### The ground-truth capacity W*", "",
           f"At n = {top} (standing in for the density): the smallest width whose held-out "
           "excess over gt_loss is within (1 + tol) of the widest width's: " +
           ", ".join(f"W*({t:g}) = {w:g}" for t, w in stars.items()) + "; on the held-out "
           "loss itself (the capacity search's yardstick): " +
           ", ".join(f"{w:g} at tol {t:g}" for t, w in loss_stars.items()) + ".", ""]
  else:
    out = ["### The proxy oracle", "",
           f"No density is known, so the proxy is read off the largest n ({top}): the "
           "smallest width whose held-out loss is within (1 + tol) of the widest width's, "
           "where widening stops improving it: " +
           ", ".join(f"W({t:g}) = {w:g}" for t, w in stars.items()) + ".", ""]
  out += _above_full(cells, top, key, stars)
  if cap.get("earlier"):  # the same cells from a shorter, earlier run: shown, never merged
    before = capacity.grid_cells(_rows(spec, f"{name}_grid", cap["earlier"], "earlier"))
    out += [f"### {cap['earlier_title']}", "",
            f"Rows: `{spec.out}/results/{name}_grid_earlier.csv`.", "",
            capacity.grid_table(before, key), "", "Read off these rows the same way: " +
            ", ".join(f"{star}({t:g}) = {capacity.w_star(before, t, key=key):g}" for t in tols)
            + ".", ""]
  return stars, out


def _above_full(cells, n, key, stars):
  """Whether the grid brackets W from above: the cells wider than the full model."""
  wide = sorted(w for m, w in cells if m == n and w >= 1 and key in cells[(m, w)])
  if len(wide) < 2:
    return []
  values = ", ".join(f"{w:g}: {cells[(n, w)][key]:.3g}" for w in wide)
  counts = {cells[(n, w)].get("seeds") for w in wide} - {None}
  seeds = "/".join(str(c) for c in sorted(counts)) or "?"
  inside = all(w < wide[-1] for w in stars.values() if w is not None)
  return [f"Above the full width at n = {n} ({key}, mean over {seeds} seed(s): a reading "
          f"of means, not a tested difference): {values}. " +
          ("Every W above lies below the widest width: widening past it did not lower "
           f"{key} by more than the tolerance, so the grid brackets W from above."
           if inside else f"Some W above is the widest width: {key} still falls with "
           "width there, so W is not bracketed from above."), ""]


def _search(spec, name, cap, widths, stars, star):
  """The capacity search's widths against W at each tolerance, and the chosen model
  against the control and random at its width, judged at cap's `tol`."""
  tol = cap.get("tol", spec.capacity_tol)
  budget = cap.get("budget", "cap")
  keep = lambda r: r["budget"] == budget or r["method"] == compare.CONTROL
  steps = [r for r in _rows(spec, f"{name}_search", cap["search"]) if keep(r)]
  points = [r for r in _points(spec, f"{name}_search", cap["search"]) if keep(r)]
  by_tol = {t: capacity.search_lines(points, widths, w) for t, w in stars.items()}
  found = by_tol[tol]
  head = (["seed", "heads kept", "MLP units kept", "kept heads", "kept MLP"]
          + [f"{star}({t:g}) = {w:g}" for t, w in stars.items()])
  body = [[f["seed"], "+".join(map(str, f["heads"])), "+".join(map(str, f["mlp"])),
           f"{f['kept_heads']:.3f}", f"{f['kept_mlp']:.3f}"]
          + [f"{o[i]['steps_heads']} / {o[i]['steps_mlp']}" for o in by_tol.values()]
          for i, f in enumerate(found)]
  out = [f"### The capacity search against {star}({tol:g}) = {stars[tol]:g}", "",
         f"Grid steps from {star} (heads / MLP) at each tolerance.", "",
         compare.markdown(head, body)]
  for ft in cap["fts"]:
    out += ["", f"### The chosen width against the control and `random` at the same width, "
            f"{ft} fine-tuning steps after the prune", "",
            "Mean ± 95% t-interval over seeds; differences paired per seed.", "",
            compare.table(steps, ft, METRICS), "", f"Verdict at +{ft}:", ""]
    out += capacity.verdict(steps, found, ft, budget, star=star)
  return out + [""]


def _capacity_at_n(spec, name, c):
  """The capacity search at one n against each seed's own best width there (the grid's
  lowest held-out excess, or c["key"]), and the chosen model against the control."""
  grid = _rows(spec, f"{name}_grid", c["grid"])
  if not spec.from_csv:
    _points(spec, f"{name}_grid", c["grid"])
  key = c.get("key", capacity.EXCESS)
  cells = capacity.grid_cells(grid)
  targets = capacity.best_width_per_seed(grid, c["n"], key)
  steps = _rows(spec, f"{name}_search", c["search"])
  found = capacity.search_lines(_points(spec, f"{name}_search", c["search"]),
                                sorted({w for _, w in cells}), targets)
  body = [[f["seed"], f"{f['target']:g}", "+".join(map(str, f["heads"])),
           "+".join(map(str, f["mlp"])), f"{f['kept_heads']:.3f}", f"{f['kept_mlp']:.3f}",
           f"{f['steps_heads']} / {f['steps_mlp']}"] for f in found]
  out = [f"## {c['title']}", ""] + _made_by(c["commands"]) + [c["notes"], "",
         f"### {key} by n and width (means over seeds {sorted(targets)})", "",
         capacity.grid_table(cells, key, 3), "",
         "Each seed's target is its own lowest cell at n = " + f"{c['n']}: " +
         ", ".join(f"seed {s}: {w:g}" for s, w in targets.items()) + ".", "",
         compare.markdown(["seed", "target", "heads kept", "MLP units kept", "kept heads",
                           "kept MLP", "grid steps (heads / MLP)"], body), ""]
  for ft in c["fts"]:
    out += [f"### The chosen width against the control and `random`, +{ft}", "",
            compare.table(steps, ft, METRICS + (key,)), "", f"Verdict at +{ft}:", ""]
    out += capacity.judge_at_n(steps, found, ft, key) + [""]
  return out


def _pending(spec, entry, names):
  """Whether a planned entry (one with `sweeps`) has not finished: from workdirs, some
  point of its sweeps is not done (read from checkpoints and eval.json's step, no
  metric) nor kept; from csv, neither its copies NAME_steps.csv nor kept copies of all
  its sweeps are there."""
  if not entry.get("sweeps"):
    return False
  if spec.from_csv:
    return not (_all_kept(spec, entry["workdirs"]) or
                all(os.path.exists(_csv(spec, n, "steps")) for n in names))
  return not plan.finished(spec, entry)


def _planned(spec_path, entries):
  """The planned sections whose sweeps have not all finished: what will run, no rows."""
  if not entries:
    return []
  out = ["## Planned, not yet run", "",
         "Fixed in docs/results/PLAN.md before their runs. Until every point of a section "
         "has finished, none of its rows is read here. One resumable command runs them all "
         f"(`--status`: progress only): `python scripts/run_study.py --config "
         f"{spec_path}:root=ROOT --jobs 2`.", ""]
  for entry in entries:
    out += [f"### {entry['title']}", "", entry["notes"], "", "```"] + list(
        entry["commands"]) + ["```", ""]
  return out


def _explore(spec):
  ex = spec.explore
  rows = _rows(spec, "explore", ex["workdirs"])
  return [f"## {ex['title']}", "", "```"] + list(ex["commands"]) + ["```", "",
          "mem_ratio / fd at each fine-tuning step after the prune (+0: just pruned); one "
          "seed, so no interval: these chose what the seeds above test.", "",
          compare.ideas_table(rows), ""]


def _frontier(spec, name, fr, judged):
  """A frontier sweep's section: its commands, the plot and the dominance tables;
  the rows of a judged sweep (fr["judged"]: its name in the verdict) go to `judged`."""
  rows = _rows(spec, f"frontier_{name}", fr["workdirs"])
  png = os.path.join(spec.out, "results", f"frontier_{name}.png")
  if not rows:
    return []
  if fr.get("judged"):
    judged[fr["judged"]] = rows
  frontier.plot(rows, png, fr["title"])
  seeds = sorted({r["seed"] for r in rows})
  confirm = []
  if fr.get("confirm"):  # points PLAN.md judges against the tracker stop on these seeds
    confirm = ["### Judged against the tracker stop (PLAN.md, Amendment 5)", "",
               "A point beats the tracker stop when its test_nll interval (below) lies "
               "below zero and none of the other three lies above zero.", "",
               frontier.stop_verdict_table(rows, fr["confirm"]), ""]
  return ([f"## {fr['title']}", ""] + _made_by(fr["commands"]) +
          [fr["notes"], "", f"Seeds: {seeds}. Rows: `{spec.out}/results/frontier_{name}_steps.csv`.",
           "", _figure(spec, png, fr["title"]), "", frontier.summarize(rows), ""] + confirm)


def _headroom(spec, name, h, masks):
  """A headroom sweep's section: masks against fine-tuning reruns; its rows go to
  `masks` for the verdict."""
  rows = _rows(spec, f"headroom_{name}", h["workdirs"])
  if not rows:
    return []
  masks[name] = rows
  seeds = sorted({r["seed"] for r in rows})
  return ([f"## {h['title']}", ""] + _made_by(h["commands"]) +
          [h["notes"], "", f"Seeds: {seeds}. Rows: `{spec.out}/results/headroom_{name}_steps.csv`.",
           "", headroom.summarize(rows), ""])


def _verdict(judged, masks, waiting):
  """The plan's verdict, computed from the judged sweeps' rows (and the headroom's),
  once none of them is `waiting` (planned sections not finished)."""
  if waiting:
    return ["## Verdict: is anything better than stopping earlier?", "",
            "Not computed yet: the planned sweeps of " + ", ".join(waiting) + " have not "
            "finished. The rules that will decide it are fixed in docs/results/PLAN.md and "
            "applied by `dit_jax.study.frontier.verdicts`.", ""]
  v = frontier.verdicts(judged)
  winners = [f for f, (verdict, _) in v.items() if verdict == "beats"]
  room = [f"Headroom ({name}): " + "; ".join(
      f"{k}: {headroom.verdict(headroom.variance_ratio(rows, k))}"
      for k in headroom.JUDGED) + "." for name, rows in masks.items()]
  return ["## Verdict: is anything better than stopping earlier?", "",
          "The rules of docs/results/PLAN.md, applied by `dit_jax.study.frontier.verdicts` "
          f"to the judged sweeps ({', '.join(judged)}): a point beats early stopping when, "
          "matched on test_nll and matched on its samples' quality, the paired interval of "
          "mem_ratio or nll_gap lies below zero with the other's not above it; a family "
          "beats it when one of its points (the same on every dataset; for a pruned family "
          "its longest fine-tuning) does so on each dataset.", "",
          frontier.verdict_table(judged), "",
          ("Families that beat early stopping: " + ", ".join(winners) + "." if winners else
           "No family beats early stopping at equal quality."), ""] + room + ([""] if room else [])


def write(spec, spec_path):
  """Writes OUT/RESULTS.md (and OUT/results/) for the spec loaded from `spec_path`."""
  lines = ["# Results: pruning against memorization, at equal budget, over seeds", "",
           f"Generated by `python scripts/results.py --config {spec_path}:root=ROOT` from "
           f"the sweep workdirs under ROOT, or by `...:from_csv` from their copies in "
           f"`{spec.out}/results/`; do not edit by hand. Machine: {spec.machine}. "
           f"Code: {spec.code}.", "",
           f"Ours: `{spec.ours}`; the verdict's budget: `{spec.budget}`. Paired intervals are "
           f"Student-t over seeds (`dit_jax/study/stats.py`); \"within noise\": the interval "
           "holds zero.", "",
           "Which side is better: lower for mem_ratio, fd, fid, test_nll, nll_gap, nll_excess "
           "and energy_distance; higher for precision and recall. `nll` (gmm: the true "
           "density's NLL of the samples) has no better side: fresh draws of the density "
           "score its entropy (1.45 nats/dim here: nll - nll_excess in the frontier csv files), and samples piled on the modes, as a "
           "memorizing model's are, score below it, so its differences carry no (better) or "
           "(worse), and a target line's \"nll outside the control's interval\" says only "
           "that the point is not where the control is; `nll_excess` = |nll - entropy|, "
           "`energy_distance` and the model's own `test_nll` (the frontier sections) judge "
           "quality in ways copying cannot win.", ""]
  for name, study in spec.studies.items():
    lines += _study(spec, name, study)
  for name, cap in (spec.get("capacity") or {}).items():
    lines += _capacity(spec, name, cap)
  planned = []  # sections whose sweeps have not finished
  for name, cap in (spec.get("capacity_at_n") or {}).items():
    if _pending(spec, cap, (f"{name}_grid", f"{name}_search")):
      planned.append(cap)
    else:
      lines += _capacity_at_n(spec, name, cap)
  judged, masks, waiting = {}, {}, []
  for name, fr in (spec.get("frontier") or {}).items():
    if _pending(spec, fr, (f"frontier_{name}",)):
      planned.append(fr)
      waiting += [f"frontier {name}"] if fr.get("judged") else []
    else:
      lines += _frontier(spec, name, fr, judged)
  for name, h in (spec.get("headroom") or {}).items():
    if _pending(spec, h, (f"headroom_{name}",)):
      planned.append(h)
      waiting.append(f"headroom {name}")
    else:
      lines += _headroom(spec, name, h, masks)
  lines += _planned(spec_path, planned)
  if judged or waiting:
    lines += _verdict(judged, masks, waiting)
  lines += _explore(spec)
  target = os.path.join(spec.out, "RESULTS.md")
  workdir_lib.atomic_write(target, "\n".join(lines))
  return target
