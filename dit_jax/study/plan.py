"""The sweeps a study spec plans: their progress, and running them to the end.

A planned section of a spec (configs/study/*.py) is an entry with `sweeps`, the
(config, workdir) pairs docs/results/PLAN.md fixed before they ran. `run` starts each
unfinished sweep as one `scripts/sweep.py` process, `jobs` at a time, each pinned to
its own share of this machine's cores, in the order of `spec.plan_order` (workdir
names; the sweeps it leaves out go last). A sweep resumes point by point, so the same
command continues after a stop or a reboot, and a finished sweep is not started
again. Progress is each point's state (done, started, waiting): no metric is read,
so a pre-registered sweep can be watched without seeing its results.

With `spec.keep` (a folder), each finished sweep's rows are also copied to
KEEP/WORKDIR (sweepdir.keep): a sweep kept there counts as finished and
docs/RESULTS.md reads it from there, so a study can be finished over several
machines that each keep only the small kept copies (e.g. in git), not the workdirs.
"""
import datetime
import os
import signal
import subprocess
import sys
import time

from dit_jax.configlib import ConfigError
from dit_jax.study import sweep
from dit_jax.study import sweepdir

SECTIONS = ("frontier", "headroom", "capacity_at_n")  # the spec fields with planned entries
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def config_path(config):
  """A planned sweep's config, `path.py[:arg]` as the spec writes it (relative to the
  repository, where its commands run), made absolute."""
  path, sep, arg = config.partition(":")
  if not os.path.isabs(path) and not os.path.exists(path):
    path = os.path.join(ROOT, path)
  return path + sep + arg


def planned(spec, only=None):
  """[dict(section, name, config, workdir)] of every planned sweep (or of the workdirs
  `only` names, in their order), in run order."""
  out = []
  for section in SECTIONS:
    for name, entry in (spec.get(section) or {}).items():
      for config, workdir in entry.get("sweeps") or ():
        out.append(dict(section=section, name=name, config=config, workdir=workdir))
  order = list(spec.get("plan_order") or ())
  unknown = set(order) - {s["workdir"] for s in out}
  if unknown:
    raise ConfigError(f"plan_order names {sorted(unknown)}, which no planned section's "
                      "sweeps write; list workdirs of `sweeps` entries.")
  out = sorted(out, key=lambda s: (order.index(s["workdir"]) if s["workdir"] in order
                                   else len(order), s["workdir"]))
  if only:
    by_name = {s["workdir"]: s for s in out}
    unknown = [w for w in only if w not in by_name]
    if unknown:
      raise ConfigError(f"--only names {unknown}, which are not planned sweeps; use some of "
                        f"{[s['workdir'] for s in out]}.")
    out = [by_name[w] for w in only]
  return out


def progress(spec, planned_sweep):
  """The points of one planned sweep under spec.root (sweep.status: no metric read);
  a sweep file that does not load is a ConfigError naming the sweep."""
  try:
    return sweep.status(config_path(planned_sweep["config"]),
                        os.path.join(spec.root, planned_sweep["workdir"]))
  except Exception as e:  # any error of the sweep file's own code, named
    raise ConfigError(f"planned sweep {planned_sweep['workdir']} "
                      f"({planned_sweep['config']}): {type(e).__name__}: {e}") from e


def kept(spec, workdir):
  """The kept copy of a finished sweep, KEEP/WORKDIR, or None (no spec.keep, not kept)."""
  dest = os.path.join(spec.keep, workdir) if spec.get("keep") else None
  return dest if dest and sweepdir.is_kept(dest) else None


def rows_dir(spec, workdir):
  """Where a sweep's rows are read from: its kept copy if there is one, else ROOT/WORKDIR."""
  return kept(spec, workdir) or os.path.join(spec.root, workdir)


def _all_done(points):
  return all(p["state"] == "done" for p in points)


def _done(spec, planned_sweep):
  return bool(kept(spec, planned_sweep["workdir"])) or _all_done(
      progress(spec, planned_sweep))


def finished(spec, entry):
  """Whether every sweep of a planned entry has finished (under spec.root, or kept)."""
  return all(_done(spec, dict(config=config, workdir=workdir))
             for config, workdir in entry.get("sweeps") or ())


def _git_commit():
  try:
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                          text=True, timeout=30).stdout.strip() or None
  except (OSError, subprocess.SubprocessError):
    return None


def _keep(spec, planned_sweep, cores, say):
  """Copies a finished sweep's rows to KEEP/WORKDIR (with spec.keep), once."""
  if not spec.get("keep") or kept(spec, planned_sweep["workdir"]):
    return
  if not _all_done(progress(spec, planned_sweep)):
    say(f"{planned_sweep['workdir']}: exited without finishing every point; not kept")
    return
  dest = os.path.join(spec.keep, planned_sweep["workdir"])
  sweepdir.keep(os.path.join(spec.root, planned_sweep["workdir"]), dest, dict(
      config=planned_sweep["config"], commit=_git_commit(), cores=len(cores),
      cpus=os.cpu_count(), kept=datetime.datetime.now(datetime.timezone.utc).isoformat(
          timespec="seconds")))
  say(f"{planned_sweep['workdir']}: rows kept in {dest}")


def describe(points):
  """One line of a sweep's progress: counts, and where its started points stand."""
  done = sum(p["state"] == "done" for p in points)
  started = [f"{p['name']} at step {p['step']} of {p['steps']}" for p in points
             if p["state"] == "started"]
  return f"{done} of {len(points)} points done" + (
      "; started: " + ", ".join(started) if started else "")


def _cores():
  if hasattr(os, "sched_getaffinity"):  # Linux: the cores this process may use
    return os.sched_getaffinity(0)
  return range(os.cpu_count() or 1)


def shares(jobs, cores=None):
  """This process's cores split into `jobs` contiguous shares, one a sweep."""
  cores = sorted(_cores() if cores is None else cores)
  if not 1 <= jobs <= len(cores):
    raise ConfigError(f"jobs={jobs}: use 1 to {len(cores)}, the cores this process may use "
                      "(each sweep gets its own share of them).")
  return [cores[i * len(cores) // jobs:(i + 1) * len(cores) // jobs] for i in range(jobs)]


# A fresh interpreter pins itself to its cores, then becomes the sweep: this process
# has JAX's threads running, so it must not fork to run code in the child (preexec_fn).
_PINNED = ("import os, sys; os.sched_setaffinity(0, {cores}); "
           "os.execv(sys.executable, [sys.executable] + sys.argv[1:])")


def command(spec, planned_sweep, cores=None, python=sys.executable):
  """The sweep's command line; pinned to `cores` where this OS can pin."""
  pin = [python, "-c", _PINNED.format(cores=sorted(cores))] if (
      cores is not None and hasattr(os, "sched_setaffinity")) else [python]
  return pin + [os.path.join(ROOT, "scripts", "sweep.py"), "--config",
                config_path(planned_sweep["config"]), "--workdir",
                os.path.join(spec.root, planned_sweep["workdir"])]


def run(spec, jobs=1, say=print, poll_s=2.0, only=None):
  """Runs every unfinished planned sweep (or those `only` names) to its end, `jobs` at
  a time, once every sweep file has loaded (a ConfigError first otherwise); each
  one's output is appended to ROOT/WORKDIR.log. Returns 0 when all finished, 1 when one
  failed (the others run on; rerun to retry it) or a SIGTERM/SIGINT stopped them
  (forwarded to every sweep, which checkpoints and exits; rerun to resume)."""
  slots = shares(jobs)
  todo = []
  for s, points in [(s, progress(spec, s)) for s in planned(spec, only)]:  # all load, or none
    if kept(spec, s["workdir"]):
      say(f"{s['workdir']}: finished (kept in {kept(spec, s['workdir'])})")
    elif _all_done(points):
      say(f"{s['workdir']}: finished ({len(points)} points)")
      _keep(spec, s, slots[0], say)
    else:
      todo.append(s)
  os.makedirs(spec.root, exist_ok=True)
  env = dict(os.environ)
  if jobs > 1:  # several sweeps on one accelerator: each takes memory as it needs it
    env.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # (JAX takes 75% at start)
  running, failed, stopped = {}, [], []

  def stop(signum, frame):
    del frame
    stopped.append(signum)
    for proc, _, _ in running.values():
      proc.send_signal(signal.SIGTERM)

  old = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
  try:
    while todo or running:
      for slot, cores in enumerate(slots):
        if slot in running or not todo or stopped:
          continue
        s = todo.pop(0)
        log_path = os.path.join(spec.root, s["workdir"] + ".log")
        log = open(log_path, "a", encoding="utf-8")
        cmd = command(spec, s, cores)
        log.write(f"\n# {time.strftime('%Y-%m-%d %H:%M:%S')} cores {cores}: "
                  f"{' '.join(cmd[-5:])}\n")  # the sweep's own command line
        log.flush()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        running[slot] = (proc, s, log)
        say(f"{s['workdir']}: started on cores {cores} ({describe(progress(spec, s))}); "
            f"log {log_path}")
      if stopped and not running:
        break
      time.sleep(poll_s)
      for slot, (proc, s, log) in list(running.items()):
        if proc.poll() is None:
          continue
        log.close()
        del running[slot]
        if proc.returncode == 0:
          say(f"{s['workdir']}: finished")
          _keep(spec, s, slots[slot], say)
        else:
          failed.append(s["workdir"])
          say(f"{s['workdir']}: exited with status {proc.returncode} "
              f"({describe(progress(spec, s))}); see {log.name}")
  finally:
    for sig, handler in old.items():
      signal.signal(sig, handler)
  if stopped:
    say("stopped; the same command resumes every sweep where it stands.")
  return 1 if failed or stopped else 0
