"""Planned sweeps (docs/results/PLAN.md): scripts/run_study.py runs them, and RESULTS.md
reads none of their rows until every point of them has finished."""
import os
import re
import subprocess
import sys

import pytest

from dit_jax import configlib
from dit_jax.configlib import ConfigError
from dit_jax.study import plan
from tests.test_study import write_spec

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FRONTIER = "configs/sweeps/frontier.py:runlocal,methods=random,decays=,widths="


def _spec(tmp_path, headroom="configs/sweeps/headroom.py:runlocal"):
  """A study spec with a judged frontier and a headroom section, both planned; finished
  sweeps are kept in tmp_path/kept."""
  return str(write_spec(tmp_path, (
      f"c.keep = {str(tmp_path / 'kept')!r}",
      "c.ours, c.budget, c.fts, c.tables, c.studies = 'ours', 'h20m50', (500,), (), {}",
      "c.explore = dict(workdirs=(), earlier=(), commands=(), title='Ideas')",
      f"c.frontier = {{'tiny': dict(sweeps=(({FRONTIER!r}, 'fr'),), workdirs=('fr',), "
      "commands=('cmd fr',), judged='gmm32', title='Tiny frontier', notes='n')}",
      f"c.headroom = {{'later': dict(sweeps=(({headroom!r}, 'hr'),), workdirs=('hr',), "
      "commands=('cmd hr',), title='Headroom later', notes='n')}",
      "c.plan_order = ('hr', 'fr')")))


def _script(name, *args, cwd):
  return subprocess.run([sys.executable, os.path.join(ROOT, "scripts", name), *args],
                        capture_output=True, text=True, cwd=cwd)


def _documents(spec, root, out, cwd):
  for arg in (f"root={root},out={out}", f"from_csv,out={out}"):
    proc = _script("results.py", "--config", f"{spec}:{arg}", cwd=cwd)
    assert proc.returncode == 0, proc.stderr[-2000:]
    yield open(os.path.join(out, "RESULTS.md"), encoding="utf-8").read()


def test_planned_sweeps_are_ordered_and_listed_without_running_or_reading(tmp_path):
  spec_path = _spec(tmp_path)
  root = tmp_path / "runs"
  spec = configlib.load_config_file(spec_path).get_config(f"root={root}")
  assert [s["workdir"] for s in plan.planned(spec)] == ["hr", "fr"]  # plan_order's
  assert plan.shares(2, cores=[0, 1, 2]) == [[0], [1, 2]]
  cmd = plan.command(spec, plan.planned(spec)[1], cores=[0])
  assert cmd[-4:] == ["--config", plan.config_path(FRONTIER), "--workdir", f"{root}/fr"]
  # the pinning prefix: a fresh interpreter pins itself, then runs the rest of the line
  pinned = subprocess.run(cmd[:3] + ["-c", "import os; print(sorted(os.sched_getaffinity(0)))"],
                          capture_output=True, text=True)
  assert pinned.stdout.strip() == "[0]", pinned.stderr
  with pytest.raises(ConfigError, match="jobs=3"):
    plan.shares(3, cores=[0, 1])
  assert [s["workdir"] for s in plan.planned(spec, only=["fr"])] == ["fr"]
  with pytest.raises(ConfigError, match="not planned"):
    plan.planned(spec, only=["fr", "nope"])
  spec.plan_order = ("fr", "typo")
  with pytest.raises(ConfigError, match="typo"):
    plan.planned(spec)
  # from another directory: the spec's config paths are the repository's
  proc = _script("run_study.py", "--config", f"{spec_path}:root={root}", "--status",
                 cwd=tmp_path)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert "fr (frontier tiny): 0 of 2 points done" in proc.stdout
  assert f"--config {FRONTIER} --workdir {root}/fr" in proc.stdout
  assert not root.exists()  # nothing ran
  for text in _documents(spec_path, root, tmp_path / "docs", tmp_path):
    planned = text[text.index("## Planned, not yet run"):]
    assert "### Tiny frontier" in planned and "### Headroom later" in planned
    assert "cmd fr" in planned and "Seeds:" not in text  # no rows
    assert ("Not computed yet: the planned sweeps of frontier tiny, headroom later have "
            "not finished") in text


@pytest.mark.loop
def test_run_study_finishes_what_it_can_and_results_read_only_finished_sections(tmp_path):
  """A sweep file that does not load stops the command before anything runs. Then the
  headroom sweep fails as it starts (a file stands where its workdir goes, and stays);
  the frontier runs to its end beside it on its own core. RESULTS.md then shows the
  frontier's rows and still no verdict, the same from workdirs and from the csv copies."""
  root = tmp_path / "runs"
  bad = _spec(tmp_path, headroom="configs/sweeps/headroom.py:runlocal,budget=h99")
  proc = _script("run_study.py", "--config", f"{bad}:root={root}", cwd=tmp_path)
  assert proc.returncode != 0 and "planned sweep hr" in proc.stderr and "h99" in proc.stderr
  assert not root.exists()
  spec_path = _spec(tmp_path)
  os.makedirs(root)
  (root / "hr").write_text("a user's file")
  proc = _script("run_study.py", "--config", f"{spec_path}:root={root}", "--jobs", "2",
                 cwd=tmp_path)
  assert proc.returncode == 1, proc.stderr[-3000:]
  assert "hr: exited with status" in proc.stdout and "fr: finished" in proc.stdout
  assert "use another --workdir" in (root / "hr.log").read_text()  # the sweep's own error
  assert (root / "hr").read_text() == "a user's file"
  assert (tmp_path / "kept" / "fr" / "kept.json").exists()
  assert not (tmp_path / "kept" / "hr").exists()
  spec = configlib.load_config_file(spec_path).get_config(f"root={root}")
  assert plan.finished(spec, spec.frontier.tiny)
  assert not plan.finished(spec, spec.headroom.later)
  texts = list(_documents(spec_path, root, tmp_path / "docs", tmp_path))
  assert texts[0] == texts[1]
  section = texts[0][texts[0].index("## Tiny frontier"):texts[0].index("## Planned, not")]
  assert "Seeds: [0]" in section and "### Headroom later" in texts[0]
  assert "### Tiny frontier" not in texts[0]
  assert "Not computed yet: the planned sweeps of headroom later" in texts[0]
  # another machine, with the kept rows and no workdir: the same document, and the
  # finished sweep is not started again
  os.rename(root / "fr", tmp_path / "fr_elsewhere")
  os.remove(tmp_path / "docs" / "results" / "frontier_tiny_steps.csv")
  assert plan.finished(spec, spec.frontier.tiny)
  assert list(_documents(spec_path, root, tmp_path / "docs", tmp_path)) == texts
  # and from csv alone, with the merged copy gone: the kept rows are read
  os.remove(tmp_path / "docs" / "results" / "frontier_tiny_steps.csv")
  proc = _script("results.py", "--config", f"{spec_path}:from_csv,out={tmp_path / 'docs'}",
                 cwd=tmp_path)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert (tmp_path / "docs" / "RESULTS.md").read_text() == texts[0]
  again = _script("run_study.py", "--config", f"{spec_path}:root={root}", cwd=tmp_path)
  assert "fr: finished (kept in" in again.stdout and "fr: started" not in again.stdout


def _points_and_base(config):
  path, _, arg = plan.config_path(config).partition(":")
  module = configlib.load_config_file(path)
  return ({p["name"]: p for p in module.get_sweep(arg or None)},
          module.get_config(arg or None).to_json())


def test_the_studys_per_seed_sweeps_are_the_plans_commands(tmp_path):
  """configs/study/pruning.py runs PLAN.md's many-seed commands one seed a sweep: the
  union of its per-seed sweeps' points, and each one's base config, are the command's."""
  text = open(os.path.join(ROOT, "docs", "results", "PLAN.md"), encoding="utf-8").read()
  commands = {w: c for c, w in re.findall(r"--config (\S+) --workdir runs/(\w+)", text)}
  commands["headroom_gmm256"] = "configs/sweeps/headroom.py"  # the plan's: its defaults
  spec = configlib.load_config_file(os.path.join(ROOT, "configs", "study", "pruning.py")
                                    ).get_config(f"root={tmp_path}")
  parts = {}
  for s in plan.planned(spec):
    parts.setdefault(re.sub(r"_s\d+$", "", s["workdir"]), []).append(s["config"])
  assert set(parts) == set(commands)
  for workdir, command in commands.items():
    points, base = _points_and_base(command)
    merged = {}
    for config in parts[workdir]:
      part_points, part_base = _points_and_base(config)
      assert part_base == base, config
      assert not set(part_points) & set(merged), config  # each point in one sweep only
      merged.update(part_points)
    assert merged == points, workdir
