"""The docs resolve: commands, configs, flags, links and metric names they quote exist."""
import os

import pytest

from tests import doccheck

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_the_repositorys_docs_resolve():
  assert doccheck.doc_files(ROOT)  # README.md and docs/*.md are found
  assert doccheck.problems(ROOT) == []


def test_readme_is_a_front_door():
  text = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
  assert len(text.splitlines()) <= 200
  for command in ("make run", "make test", "make test-fast", "tensorboard --logdir"):
    assert command in text, command


GOOD = {
    "Makefile": "run:\n\techo run\ntest-fast:\n\techo fast\n",
    "scripts/train.py": 'flags.DEFINE_string("workdir", None, "w")\n'
                        'config_flags.DEFINE_config_file("config", None, "c")\n',
    "configs/tiny.py": "from dit_jax import configlib\n"
                       "def get_config(arg=None):\n"
                       "  a = configlib.parse_arg(arg, n=32)\n"
                       "  c = configlib.ml_collections.ConfigDict()\n"
                       "  c.train = configlib.ml_collections.ConfigDict({'steps': a.n})\n"
                       "  return c\n",
    "dit_jax/metrics.py": 'def log(prefix):\n  return {f"{prefix}/gap": 0, "train/loss": 1}\n'
                          'PREFIXES = ("memo", "memo_ema")\n',
    "docs/OTHER.md": "# Other page\n\n## A section, with punctuation\n",
    "README.md": "# Fixture\n\n```bash\nmake test-fast\n"
                 "python scripts/train.py --config configs/tiny.py:n=8 --workdir w \\\n"
                 "    --config.train.steps=3   # a comment\n```\n\n"
                 "See [other](docs/OTHER.md#a-section-with-punctuation), `train/loss`, "
                 "`memo_ema/gap_t3`.\n\n| metric | what |\n|---|---|\n| `memo/gap` | a gap |\n",
}

BROKEN = [  # (file, text replaced, replacement, the problem it must cause)
    ("README.md", "docs/OTHER.md#", "docs/GONE.md#", "link docs/GONE.md#a-section"),
    ("README.md", "#a-section-with", "#no-section-with", "has no heading #no-section"),
    ("README.md", "scripts/train.py", "scripts/nope.py", "scripts/nope.py does not exist"),
    ("README.md", "configs/tiny.py", "configs/gone.py", "config configs/gone.py does not exist"),
    ("README.md", ":n=8", ":m=8", "does not load: ConfigError"),
    ("README.md", "--workdir w", "--workdir w --steps 3", "has no flag --steps"),
    ("README.md", "config.train.steps", "config.train.lr", "has no config field train.lr"),
    ("README.md", "make test-fast", "make tests", "make has no target tests"),
    ("README.md", "`train/loss`", "`train/los`", "metric train/los is not written"),
    ("README.md", "| `memo/gap` |", "| `memo/gap_size` |", "metric memo/gap_size"),
]


def _fixture(root, files):
  for rel, text in files.items():
    os.makedirs(os.path.dirname(os.path.join(root, rel)), exist_ok=True)
    with open(os.path.join(root, rel), "w", encoding="utf-8") as f:
      f.write(text)
  return str(root)


def test_a_fixture_that_resolves_passes(tmp_path):
  assert doccheck.problems(_fixture(tmp_path, GOOD)) == []


@pytest.mark.parametrize("file, old, new, problem", BROKEN, ids=[b[3] for b in BROKEN])
def test_each_broken_reference_is_reported(tmp_path, file, old, new, problem):
  assert old in GOOD[file]
  found = doccheck.problems(_fixture(tmp_path, dict(GOOD, **{file: GOOD[file].replace(old, new)})))
  assert len(found) == 1 and problem in found[0], found
  assert found[0].startswith("README.md:")  # where, with the line
