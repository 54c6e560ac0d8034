"""Config fuzzing: every invalid override is a ValueError naming its field, before any compile."""
import re

import jax
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from configs import default
from dit_jax import config_check, configlib

NAN, INF = float("nan"), float("inf")
non_finite = st.sampled_from([NAN, INF, -INF])
non_positive = st.integers(max_value=0)
negative = st.integers(max_value=-1)
floats = st.floats(allow_nan=False, allow_infinity=False, width=32)


def unknown(*known):
  """Strings that are none of `known` (and no TFDS dataset name either)."""
  return st.from_regex(r"[A-Za-z0-9_./-]{1,12}", fullmatch=True).map(
      lambda s: s + "_x").filter(lambda s: s not in known)


# field -> invalid values; each must be refused with a ValueError naming config.<field>
INVALID = {
    "seed": negative,
    "train.steps": non_positive,
    "train.batch_size": non_positive,
    "train.lr": floats.filter(lambda v: v <= 0) | non_finite,
    "train.warmup_steps": negative,
    "train.lr_schedule": unknown("constant", "cosine"),
    "train.weight_decay": floats.filter(lambda v: v < 0) | non_finite,
    "train.b1": floats.filter(lambda v: not 0 <= v < 1) | non_finite,
    "train.b2": floats.filter(lambda v: not 0 <= v < 1) | non_finite,
    "train.grad_clip": floats.filter(lambda v: v < 0) | non_finite,
    "train.ema_decay": floats.filter(lambda v: not 0 <= v < 1) | non_finite,
    "model.variant": unknown(),
    "model.hidden": negative | st.integers(1, 4096).filter(lambda h: h % 4),  # tiny: 4 heads
    "model.depth": negative,
    "model.heads": st.lists(st.integers(-8, 0), min_size=2, max_size=2).map(tuple),
    "model.mlp": st.lists(st.integers(-8, 0), min_size=2, max_size=2).map(tuple),
    "model.mlp_ratio": floats.filter(lambda v: v <= 0) | non_finite,
    "model.dtype": unknown("float32", "bfloat16", "float16"),
    "model.class_dropout": floats.filter(lambda v: not 0 <= v <= 1) | non_finite,
    "model.time_scale": floats.filter(lambda v: v <= 0) | non_finite,
    "model.pos_order": unknown("row_col", "col_row"),
    "data.name": unknown(),
    "data.n_train": non_positive | st.integers(1797, 10**6),  # digits has 1797 images
    "data.n_select": non_positive,
    "data.n_test": non_positive,
    "data.image_size": non_positive | st.integers(9, 512),  # digits are 8x8
    "diffusion.schedule": unknown("vp", "ddpm_linear", "ddpm_cosine"),
    "diffusion.weighting": unknown("eps", "score"),
    "diffusion.num_steps": st.integers(max_value=1),
    "diffusion.t_max": non_finite,
    "log_every": non_positive,
    "checkpoint.every": non_positive,
    "checkpoint.keep": non_positive,
    "sample.every": negative,
    "sample.num": negative,
    "sample.steps": non_positive,
    "sample.method": unknown("ddpm", "ddim", "heun"),
    "sample.guidance": non_finite,
    "memo.every": negative,
}

# fields that only matter together with another setting
INVALID_WITH = {
    "diffusion.t0": ({"diffusion.schedule": "vp"},
                     floats.filter(lambda v: v <= 0 or v >= 10.0) | non_finite),
}

compiles = []
jax.monitoring.register_event_duration_secs_listener(
    lambda event, *a, **k: compiles.append(event) if "compile" in event else None)


def config_with(overrides):
  config = default.get_config("runlocal")
  for key, value in overrides.items():
    node = config
    *path, last = key.split(".")
    for p in path:
      node = node[p]
    node[last] = value  # ConfigDict refuses a wrong type here, naming the key
  return config


def assert_rejected(overrides, field):
  config = config_with(overrides)
  before = len(compiles)
  with pytest.raises(ValueError, match=re.escape(f"config.{field}")):
    config_check.validate(config_check.finalize(config))
  assert len(compiles) == before, "validation compiled something"


FUZZ = settings(max_examples=15, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow])


@pytest.mark.parametrize("field", sorted(INVALID))
def test_invalid_value_is_rejected_naming_the_field(field):
  @FUZZ
  @given(INVALID[field])
  def check(value):
    assert_rejected({field: value}, field)
  check()


@pytest.mark.parametrize("field", sorted(INVALID_WITH))
def test_invalid_value_with_its_setting_is_rejected(field):
  setting, values = INVALID_WITH[field]

  @FUZZ
  @given(values)
  def check(value):
    assert_rejected({**setting, field: value}, field)
  check()


@FUZZ
@given(st.dictionaries(st.sampled_from(sorted(INVALID)), st.none(), min_size=2, max_size=5),
       st.data())
def test_several_invalid_values_name_one_of_them(fields, data):
  overrides = {f: data.draw(INVALID[f]) for f in fields}
  config = config_with(overrides)
  with pytest.raises(ValueError) as e:
    config_check.validate(config_check.finalize(config))
  assert any(f"config.{f}" in str(e.value) for f in fields), (str(e.value), overrides)


@FUZZ
@given(lr=st.floats(1e-6, 1.0), ema=st.floats(0.0, 0.9999), b=st.floats(0.0, 0.999),
       dropout=st.floats(0.0, 1.0), warmup=st.integers(0, 100), every=st.integers(0, 100),
       steps=st.integers(1, 100), num_steps=st.integers(2, 2000))
def test_valid_values_pass(lr, ema, b, dropout, warmup, every, steps, num_steps):
  """The checks refuse only what is wrong: values in range go through."""
  config = config_with({"train.lr": lr, "train.ema_decay": ema, "train.b1": b, "train.b2": b,
                        "model.class_dropout": dropout, "train.warmup_steps": warmup,
                        "sample.every": every, "sample.steps": steps,
                        "diffusion.num_steps": num_steps, "memo.every": every})
  config_check.validate(config_check.finalize(config))


def test_the_compile_counter_counts():
  before = len(compiles)
  jax.jit(lambda x: x * 3 + 1)(2.0)
  assert len(compiles) > before


def test_wrong_types_are_refused_when_set():
  """What the command line cannot parse into the field's type never reaches validate."""
  for key, value in (("train.steps", 1.5), ("train.lr", "fast"), ("data.n_train", "all"),
                     ("model.heads", 4), ("data.data_dir", 5)):
    with pytest.raises(TypeError, match=key.split(".")[-1]):
      config_with({key: value})


@pytest.mark.parametrize("field, value", [
    ("train.ema_decay", NAN), ("model.mlp_ratio", INF), ("model.heads", (4, 0)),
    ("diffusion.num_steps", 1), ("sample.steps", 0), ("seed", -1)])
def test_train_refuses_before_touching_the_workdir(tmp_path, field, value):
  from dit_jax import train  # pylint: disable=import-outside-toplevel
  w = tmp_path / "w"
  with pytest.raises(ValueError, match=re.escape(f"config.{field}")):
    train.train_and_evaluate(config_with({field: value}), str(w))
  assert not w.exists()
