"""Runs the points of a sweep file, resumably; sweepdir owns its files, compare its tables.

A sweep file has get_config(arg), the config every point starts from, and
get_sweep(arg), a list of points run in order. A point is a dict:
  name        its workdir under the sweep's workdir;
  method      the row label (e.g. "random"); budget: the group whose rows
              compare at equal budget (e.g. "h20m50"); seed;
  at          the reference step: fine-tuning steps are counted from it;
  overrides   dotted config overrides;
  start_from  optional (point name, step): a copy of that point's checkpoint is
              where this one starts (a base run shared by the points of a seed);
  needs       optional {dotted key: (point name, dotted key in its eval.json)}:
              values chosen by an earlier point (e.g. the width a capacity
              search picked, so that other methods cut the same).
Each point ends with an eval.json; a point whose eval.json is at its last step
is read, not rerun, so the same command resumes an interrupted sweep.
"""
import logging
import os
import shutil
import tempfile

import jax

from dit_jax import config_check
from dit_jax import configlib
from dit_jax import distributed
from dit_jax import memorization
from dit_jax import seeds
from dit_jax import train
from dit_jax import workdir as workdir_lib
from dit_jax import writers
from dit_jax.configlib import ConfigError
from dit_jax.study import compare
from dit_jax.study import frontier
from dit_jax.study import headroom
from dit_jax.study import sweepdir

log = logging.getLogger("dit_jax")


def _lookup(tree, dotted):
  for part in dotted.split("."):
    tree = tree[part]
  return tree


def _read_eval(pdir):
  return workdir_lib.read_eval(pdir) or None


def point_config(base, point, workdir):
  """The finalized config of a point; its `needs` are read from earlier points."""
  config = configlib.with_overrides(base, point.get("overrides", {}))
  needs = {}
  for key, (source, field) in point.get("needs", {}).items():
    ev = _read_eval(os.path.join(workdir, source))
    if ev is None:
      raise ConfigError(f"sweep point {point['name']!r} needs {field!r} of point {source!r}, "
                       "which has not run; list it earlier in get_sweep().")
    value = _lookup(ev, field)
    needs[key] = tuple(value) if isinstance(value, list) else value
  return config_check.finalize(configlib.with_overrides(config, needs))


def _is_done(pdir, config):
  ev = _read_eval(pdir)
  # `unfinished`: stopped after its last step, e.g. while its control trained
  if ev is None or "unfinished" in ev:
    return False
  stop = ev.get("tracker_stop")
  ended_by_tracker = memorization.stop_holds(stop, config.memo.stop_at)  # memo.stop_at
  return ev.get("step") == (stop["step"] if ended_by_tracker else config.train.steps)


def _start(point, pdir, workdir):
  """Copies the checkpoint a point starts from (the source stays as it is).

  Process 0 copies into a hidden temporary directory and renames it into place,
  so a crash mid-copy leaves no partial checkpoints/ for the next command to resume
  from, and hosts on a shared filesystem do not race; the others wait for it.
  """
  if "start_from" not in point:
    return
  source, step = point["start_from"]
  src = workdir_lib.path(workdir, source, workdir_lib.CHECKPOINTS, str(step))
  target = workdir_lib.path(pdir, workdir_lib.CHECKPOINTS)
  if workdir_lib.is_writer() and not os.path.isdir(target):
    if not os.path.isdir(src):
      raise ConfigError(f"sweep point {point['name']!r} starts from {src}, which does not "
                        f"exist; point {source!r} must run to step {step} first.")
    os.makedirs(pdir, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".checkpoints.copying.", dir=pdir)
    shutil.copytree(src, os.path.join(tmp, str(step)))
    os.rename(tmp, target)
  distributed.barrier("dit_jax_sweep_start")  # the copy is in place for every process


def _other_points(workdir, names):
  """The csv rows an earlier command wrote for points this one does not list (a workdir
  grown in parts, e.g. a budget added to finished seeds): kept, so that sweep.csv and
  sweep_steps.csv hold every point of the workdir, not only the last command's."""
  out = [[r for r in sweepdir.read_rows(workdir, f) if r["name"] not in names]
         for f in (sweepdir.POINTS, sweepdir.STEPS)]
  if out[0]:
    log.info("sweep: keeping the rows of %d point(s) of %s this command does not list",
             len(out[0]), workdir)
  return out


def use_seed_parallel(choice="auto"):
  """Whether a sweep trains its seeds together: on | off | auto (on unless JAX runs on
  the CPU, where the vmapped step is slower than one seed's own)."""
  if choice not in ("auto", "on", "off"):
    raise ConfigError(f"seed_parallel={choice!r}: use auto, on or off.")
  if choice == "auto":
    return jax.default_backend() != "cpu"
  return choice == "on"


def _seed_group(base, points, i, workdir):
  """Point i and the later unfinished points that are it at another seed (the same
  overrides but the seed, trained from scratch, unpruned): trained together."""
  def key(point):
    if "start_from" in point or "needs" in point:
      return None
    config = point_config(base, point, workdir)
    if config.prune.at_step >= 0:
      return None
    over = {k: v for k, v in point.get("overrides", {}).items() if k != "seed"}
    return (point["method"], repr(sorted(over.items())))
  first = key(points[i])
  if first is None:
    return [points[i]]
  group = [points[i]]
  for point in points[i + 1:]:
    if key(point) == first and not _is_done(os.path.join(workdir, point["name"]),
                                            point_config(base, point, workdir)):
      group.append(point)
  return group


def status(config_path, workdir):
  """Where each point of a sweep stands, read from its workdir without running or
  reading any metric: [dict(name, state, step, steps)], state "done", "started"
  (its newest checkpoint is `step` of `steps`) or "waiting" (`steps` None while the
  point needs a result of an earlier one)."""
  path, _, arg = config_path.partition(":")
  module = configlib.load_config_file(path)
  base, points = module.get_config(arg or None), module.get_sweep(arg or None)
  out = []
  for point in points:
    pdir = os.path.join(workdir, point["name"])
    try:
      config = point_config(base, point, workdir)
    except ConfigError:  # it needs a result of an earlier point that has not run
      out.append(dict(name=point["name"], state="waiting", step=0, steps=None))
      continue
    ckpts = workdir_lib.path(pdir, workdir_lib.CHECKPOINTS)
    steps = [int(d) for d in os.listdir(ckpts) if d.isdigit()] if os.path.isdir(ckpts) else []
    state = ("done" if _is_done(pdir, config) else "started" if steps else "waiting")
    out.append(dict(name=point["name"], state=state, step=max(steps, default=0),
                    steps=int(config.train.steps)))
  return out


def run_sweep(config_path, workdir, overrides=None, seed_parallel="auto"):
  """Runs every point of `path.py[:arg]`; finished points are read, not rerun.

  `overrides` (dotted keys) apply to the base config of every point. With
  seed_parallel (on | off | auto: see use_seed_parallel()), points that differ only in
  their seed train together in one program (dit_jax.seeds); each still writes its
  own workdir. Returns
  (rows, step_rows, summary markdown), with the rows of points an earlier command put
  in this workdir first.
  """
  path, _, arg = config_path.partition(":")
  module = configlib.load_config_file(path)
  base, points = module.get_config(arg or None), module.get_sweep(arg or None)
  base = configlib.with_overrides(base, overrides or {})
  names = [p["name"] for p in points]
  if len(set(names)) != len(names):
    raise ConfigError(f"{path}: get_sweep() repeats point names; each needs its own workdir.")
  rows, step_rows = _other_points(workdir, names)
  together = use_seed_parallel(seed_parallel)
  stopped = None
  for i, point in enumerate(points):
    pdir = os.path.join(workdir, point["name"])
    config = point_config(base, point, workdir)
    if not _is_done(pdir, config):
      group = _seed_group(base, points, i, workdir) if together else [point]
      log.info("sweep point %d/%d: %s", i + 1, len(points),
               " + ".join(p["name"] for p in group))
      if len(group) > 1:
        run = seeds.train_group([point_config(base, p, workdir) for p in group],
                                [os.path.join(workdir, p["name"]) for p in group])
      else:
        _start(point, pdir, workdir)
        run = train.train_and_evaluate(config, pdir)
      if run.stop_requested:
        stopped = point["name"]
        break
    rows.append(_row(point, config, pdir))
    step_rows.extend(_step_rows(point, config, pdir))
    sweepdir.write_points(workdir, rows)
    sweepdir.write_steps(workdir, step_rows)
  is_frontier = any(r["method"] == frontier.EARLY for r in step_rows)
  if is_frontier:
    summary = frontier.summarize(step_rows)
  elif any(r["method"] == "mask" for r in step_rows):
    summary = headroom.summarize(step_rows)
  else:
    summary = compare.summarize(step_rows)
  workdir_lib.atomic_write(sweepdir.path(workdir, sweepdir.SUMMARY), summary)
  if workdir_lib.is_writer() and is_frontier:
    frontier.plot(step_rows, sweepdir.path(workdir, sweepdir.PLOT), os.path.basename(workdir))
  elif workdir_lib.is_writer():
    compare.durability_plot(step_rows, sweepdir.path(workdir, sweepdir.PLOT))
  if stopped:  # the tables so far are written; the caller's exit status says it stopped
    raise train.StoppedEarly(f"sweep stopped at point {stopped}; run the same command "
                             "again to resume")
  return rows, step_rows, summary


def _labels(point, config):
  return dict(name=point["name"], method=point["method"], budget=point.get("budget", ""),
              seed=config.seed, data=config.data.name)


def _row(point, config, pdir):
  """The point at its last step: one row of sweep.csv."""
  ev = _read_eval(pdir)
  prune = ev.get("prune") or {}
  at = point.get("at", 0)
  row = {k: ev.get(k) for k in sweepdir.COLUMNS}
  row.update(_labels(point, config), ratio=prune.get("ratio", 0.0),
             mlp_ratio=prune.get("mlp_ratio", 0.0),
             heads="+".join(map(str, config.model.heads if not prune else prune["heads"])),
             mlp="+".join(map(str, config.model.mlp if not prune else prune["mlp"])),
             ft_steps=ev["step"] - at,
             train_steps_per_sec=writers.median_steps_per_sec(
                 writers.read_metrics(pdir), first=at + config.log_every))
  return row


def _step_rows(point, config, pdir):
  """One row per evaluated step, with the tracker's reading at that step."""
  ev = _read_eval(pdir)
  metrics = {r["step"]: r for r in writers.read_metrics(pdir)}
  out = []
  for step, summary in sorted(ev.get("by_step", {}).items(), key=lambda kv: int(kv[0])):
    step = int(step)
    row = {k: summary.get(k) for k in sweepdir.STEP_COLUMNS}
    row.update(_labels(point, config), step=step, ft_steps=step - point.get("at", 0))
    row.update({k: metrics.get(step, {}).get(k) for k in sweepdir.STEP_COLUMNS if "/" in k})
    out.append(row)
  return out
