"""Checks that what the docs tell a reader to run, open or read exists in the repository.

  problems(root) -> ["README.md:12: scripts/nope.py does not exist", ...]

- every command in a fenced code block (or an inline `python ...` span) that runs a
  script resolves: the script exists, its `--config path.py[:arg]` loads (get_config,
  and get_sweep for sweep files), its `--config.a.b=v` fields exist in that config, and
  its other `--flags` are defined by the script or the dit_jax flags it imports;
  `make TARGET` names a target of the Makefile;
- every relative link and image exists, and a `#heading` in it names a heading there;
- every metric name quoted (`train/...`, `memo/...`, `memo_ema/...`, `eval/...`, and
  the first column of a table headed "metric") is written somewhere in dit_jax's code.
"""
import glob
import os
import re
import shlex
import sys

DOCS = ("README.md", "CONTRIBUTING.md", "BENCHMARKS.md", "docs/*.md")
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.S | re.M)
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
SPAN = re.compile(r"`([^`\n]+)`")
METRIC = re.compile(r"^(train|memo|memo_ema|eval)/[a-z0-9_]+$")
FLAG_DEF = re.compile(r"""DEFINE_\w+\(\s*["'](\w+)["']|add_argument\(\s*["']--([\w-]+)["']""")
# absl's own flags, accepted by every absl script
ABSL_FLAGS = {"help", "helpfull", "helpshort", "flagfile", "verbosity", "logtostderr"}


def doc_files(root):
  return sorted(f for pattern in DOCS for f in glob.glob(os.path.join(root, pattern)))


def slug(heading):
  """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to '-'."""
  text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
  return text.replace(" ", "-")


def anchors(path):
  text = FENCE.sub("", open(path, encoding="utf-8").read())
  return {slug(m.group(1)) for m in re.finditer(r"^#+\s+(.*)$", text, re.M)}


def _commands(text):
  """Shell lines of the fenced blocks and inline `python ...` spans, with their line."""
  for m in FENCE.finditer(text):
    first = text.count("\n", 0, m.start(1)) + 1
    joined, start = "", None
    for i, line in enumerate(m.group(1).split("\n")):
      start = first + i if start is None else start
      if line.rstrip().endswith("\\"):
        joined += line.rstrip()[:-1] + " "
        continue
      yield start, joined + line
      joined, start = "", None
  outside = FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), text)
  for m in SPAN.finditer(outside):
    if m.group(1).startswith(("python ", "make ")):
      yield outside.count("\n", 0, m.start()) + 1, m.group(1)


def _tokens(line):
  try:
    return shlex.split(line, comments=True)
  except ValueError:  # an unbalanced quote: not a command this check understands
    return []


def _flags_of(root, script):
  """The flags a script accepts: its own DEFINEs or argparse options, and dit_jax's."""
  names = set(ABSL_FLAGS)
  sources = [os.path.join(root, script)] + glob.glob(os.path.join(root, "dit_jax", "*.py"))
  for f in sources:
    for m in FLAG_DEF.finditer(open(f, encoding="utf-8").read()):
      names.add((m.group(1) or m.group(2)).replace("-", "_"))
  return names


def _load_config(root, value):
  """get_config(arg) of `path.py[:arg]` (and get_sweep(arg) where it has one)."""
  sys.path.insert(0, root)  # configs import each other as the scripts see them
  try:
    from dit_jax import configlib
    path, _, arg = value.partition(":")
    module = configlib.load_config_file(os.path.join(root, path))
    config = module.get_config(arg or None)
    if hasattr(module, "get_sweep"):
      module.get_sweep(arg or None)
    return config
  finally:
    sys.path.remove(root)


def _has_field(config, dotted):
  for part in dotted.split("."):
    if not hasattr(config, "keys") or part not in config:
      return False
    config = config[part]
  return True


def _check_python(root, tokens, where):
  """A `python SCRIPT ...` command: the script, its config and its flags."""
  script = next((t for t in tokens if t.endswith(".py")), None)
  if script is None:
    return []
  if not os.path.isfile(os.path.join(root, script)):
    return [f"{where}: {script} does not exist"]
  out, config, flags = [], None, _flags_of(root, script)
  args = tokens[tokens.index(script) + 1:]
  for i, tok in enumerate(args):
    if not tok.startswith("--"):
      continue
    name, eq, value = tok[2:].partition("=")
    if name == "config" and "config" in flags:
      value = value if eq else (args[i + 1] if i + 1 < len(args) else "")
      if value == "...":
        continue  # elided in the text: any config
      if not os.path.isfile(os.path.join(root, value.partition(":")[0])):
        out.append(f"{where}: config {value.partition(':')[0]} does not exist")
        continue
      if "workdir=" in value.partition(":")[2]:
        continue  # reads a user's own run (configs/from_workdir.py): the file is checked
      try:
        config = _load_config(root, value)
      except Exception as e:  # pylint: disable=broad-except
        out.append(f"{where}: config {value} does not load: {type(e).__name__}: {e}")
    elif name.startswith("config."):
      if config is not None and not _has_field(config, name[len("config."):]):
        out.append(f"{where}: {script} has no config field {name[len('config.'):]}")
    elif name.replace("-", "_") not in flags and name.removeprefix("no") not in flags:
      out.append(f"{where}: {script} has no flag --{name}")
  return out


def _make_targets(root):
  text = open(os.path.join(root, "Makefile"), encoding="utf-8").read()
  return set(re.findall(r"^([\w.-]+):", text, re.M))


def check_commands(root, path, text):
  out, targets = [], None
  for line_no, line in _commands(text):
    where = f"{os.path.relpath(path, root)}:{line_no}"
    tokens = _tokens(line)
    for i, tok in enumerate(tokens):
      if re.fullmatch(r"(\S*/)?python3?", tok):
        out += _check_python(root, tokens[i:], where)
        break
      if tok == "make":
        targets = targets if targets is not None else _make_targets(root)
        named = [t for t in tokens[i + 1:] if not t.startswith("-") and "=" not in t][:1]
        out += [f"{where}: make has no target {t}" for t in named if t not in targets]
        break
  return out


def check_links(root, path, text):
  out = []
  text_outside = FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), text)
  for m in LINK.finditer(text_outside):
    target = m.group(1)
    if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
      continue
    file, _, anchor = target.partition("#")
    where = f"{os.path.relpath(path, root)}:{text_outside.count(chr(10), 0, m.start()) + 1}"
    full = os.path.normpath(os.path.join(os.path.dirname(path), file)) if file else path
    if not os.path.exists(full):
      out.append(f"{where}: link {target} does not exist")
    elif anchor and full.endswith(".md") and anchor not in anchors(full):
      out.append(f"{where}: {os.path.relpath(full, root)} has no heading #{anchor}")
  return out


def _code_text(root):
  return "\n".join(open(f, encoding="utf-8").read()
                   for f in glob.glob(os.path.join(root, "dit_jax", "**", "*.py"), recursive=True))


def metric_exists(name, code):
  """Whether dit_jax writes `name`: spelled whole, or its prefix and its tail apart (the
  tracker formats f"{prefix}/{key}"); a per-bucket suffix _t<k> is made by a format too."""
  name = re.sub(r"_t\d+$", "", name)
  if re.search(r"[\"'/{]" + re.escape(name) + r"\b", code):
    return True
  prefix, _, tail = name.rpartition("/")
  return bool(prefix) and re.search(r"[\"']" + re.escape(prefix) + r"[\"'/]", code) is not None \
      and re.search(r"[\"'/}]" + re.escape(tail) + r"\b", code) is not None


def _metric_names(text):
  names = {m.group(1) for m in SPAN.finditer(text) if METRIC.match(m.group(1))}
  for table in re.finditer(r"^\|\s*metric\s*\|.*\n\|[-| ]+\|\n((?:\|.*\n?)*)", text, re.M):
    for row in table.group(1).splitlines():
      cell = SPAN.search(row.split("|")[1]) if row.count("|") > 1 else None
      if cell:
        names.add(cell.group(1))
  return names


def check_metrics(root, path, text, code):
  rel = os.path.relpath(path, root)
  return [f"{rel}: metric {n} is not written anywhere in dit_jax"
          for n in sorted(_metric_names(text)) if not metric_exists(n, code)]


def problems(root):
  out, code = [], _code_text(root)
  for path in doc_files(root):
    text = open(path, encoding="utf-8").read()
    out += check_commands(root, path, text) + check_links(root, path, text)
    out += check_metrics(root, path, text, code)
  return out


if __name__ == "__main__":
  found = problems(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  print("\n".join(found) or "the docs resolve")
  sys.exit(1 if found else 0)
