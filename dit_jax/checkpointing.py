"""Orbax checkpoints of the whole train state plus a JSON record of the run.

Each step directory holds the train state in four orbax items, so that a reader
restores only what it needs (evaluation and sampling: `ema`, a quarter of the
bytes): `params`, `ema`, `opt_state` (Adam's two moments) and `loop` (step, rng);
and `meta` (architecture, base architecture from the config, data position, and
anything else the run needs to rebuild its shapes before restoring arrays).
Steps written before the split hold one `state` item; they restore as before.

`meta` also carries a checksum of every array, taken at save time: orbax reads a
flipped byte inside a compressed chunk back as garbage without an error, so
`restore` compares the checksums and refuses a state that does not match.
`restore_latest` falls back past damaged steps and moves them aside, never deletes.
"""
import contextlib
import errno
import logging
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from dit_jax import distributed
from dit_jax import sharding

log = logging.getLogger("dit_jax")

DAMAGED_PREFIX = "damaged-"


# orbax item -> the train state's keys it holds
ITEMS = {"params": ("params",), "ema": ("ema",), "opt_state": ("opt_state",),
         "loop": ("step", "rng")}
OLD_ITEM = "state"  # every key in one item, as steps were written before the split


class DamagedCheckpointError(ValueError):
  """A step that cannot be read back as it was written."""


class CheckpointWriteError(ValueError):
  """A save that failed (disk full, read-only, ...); the older steps are intact."""


class Checkpointer:
  """A thin layer over ocp.CheckpointManager with asynchronous saves.

  cleanup=True (the training run, which holds the workdir lock) lets orbax remove
  unfinished `<step>.orbax-checkpoint-tmp` saves left by a crash; readers leave them,
  as they may belong to a run that is saving right now.
  """

  def __init__(self, directory, keep=3, async_save=True, cleanup=False):
    self.directory = epath.Path(directory)
    self.manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=True, cleanup_tmp_directories=cleanup,
            enable_async_checkpointing=async_save))
    self._write_failed = False
    _quiet_abandoned_io(True)  # until close()

  def latest_step(self):
    return self.manager.latest_step()

  def all_steps(self):
    return list(self.manager.all_steps())

  def restore_meta(self, step=None):
    step = self.latest_step() if step is None else step
    out = self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
    return out["meta"]

  def restore(self, abstract_state, step=None, keys=None):
    """Restores arrays into the shapes and shardings of `abstract_state` (None: as
    saved); `keys` (e.g. ("ema",)) reads only the items that hold those state keys
    and returns only them.

    Raises DamagedCheckpointError when the arrays differ from their checksums.
    """
    step = self.latest_step() if step is None else step
    state, meta = self._restore_unverified(abstract_state, step, keys)
    _verify(state, meta, self.step_path(step))
    return state, meta

  def _restore_unverified(self, abstract_state, step, keys=None):
    part = lambda tree, names: None if tree is None else {k: tree[k] for k in names}
    if (self.step_path(step) / OLD_ITEM).exists():  # written before the split: all or nothing
      out = self.manager.restore(step, args=ocp.args.Composite(**{
          OLD_ITEM: ocp.args.StandardRestore(abstract_state), "meta": ocp.args.JsonRestore()}))
      state = out[OLD_ITEM]
      return (state if keys is None else part(state, keys)), out["meta"]
    items = [i for i, names in ITEMS.items() if (self.step_path(step) / i).exists() and
             (keys is None or set(names) & set(keys))]
    out = self.manager.restore(step, args=ocp.args.Composite(
        meta=ocp.args.JsonRestore(),
        **{i: ocp.args.StandardRestore(part(abstract_state, ITEMS[i])) for i in items}))
    state = {k: v for i in items for k, v in out[i].items()}
    return (state if keys is None else part(state, keys)), out["meta"]

  def restore_latest(self, abstract_fn):
    """(step, state, meta) of the newest step that reads back whole; None if none exist.

    abstract_fn(meta) -> the abstract state of that step (its architecture may
    differ from the config's after pruning); its errors propagate. Damaged steps
    are skipped with a warning and, once an older one has restored, moved aside.

    In a multi-process run every process judges each step, then all adopt one
    verdict (a step damaged for one host, e.g. a shard it cannot read or a commit
    marker NFS has not shown it yet, is damaged for all) before anything else: so
    they restore the same step, run the checksums' collectives on it together, and
    set aside the same steps, instead of waiting in different collectives forever.
    """
    skipped = []
    for step in sorted(self.all_steps(), reverse=True):
      why = self._local_damage(step)  # files only: no collective before the vote
      if distributed.all_agree(f"dit_jax_readable_{step}", why is None):
        state, meta, why = self._restore_step(step, abstract_fn)
        if distributed.all_agree(f"dit_jax_restored_{step}", why is None):
          try:  # the checksums are a collective on this step, with one answer everywhere
            _verify(state, meta, self.step_path(step))
          except DamagedCheckpointError as e:
            why = e
          else:
            self._set_aside(skipped)
            return step, state, meta
      skipped.append(self._skip(step, why or DamagedCheckpointError(
          "damaged as another process of this run sees it")))
    if skipped:  # nothing good to fall back to: change nothing, let a person decide
      raise DamagedCheckpointError(
          f"no checkpoint in {self.directory} reads back ("
          + "; ".join(f"{p.name}: {why}" for p, why in skipped)
          + "). Nothing was moved or deleted; move these step directories elsewhere "
          "to start afresh, or use another --workdir.")
    return None

  def save(self, step, state, meta, force=False):
    meta = dict(meta, checksums=checksums(state))
    with self._write_errors():  # this save's own writes, or the previous async one's
      saved = self.manager.save(step, args=ocp.args.Composite(
          meta=ocp.args.JsonSave(meta),
          **{item: ocp.args.StandardSave(part) for item, part in _split(state).items()}),
          force=force)
    if saved:
      log.info("checkpoint at step %d queued in %s", step, self.directory)
    return saved

  def reached_preemption(self, step):
    return self.manager.reached_preemption(step)

  def wait(self):
    with self._write_errors():
      self.manager.wait_until_finished()

  def close(self):
    reported = self._write_failed
    try:
      self.wait()
    except CheckpointWriteError:
      if not reported:  # else raised already: don't mask the error on its way out
        raise
    finally:
      self.manager.close()
      _quiet_abandoned_io(False)

  @contextlib.contextmanager
  def _write_errors(self):
    """A failed save (often a full disk) as one clear error; orbax's own is its cause."""
    try:
      yield
    except Exception as e:  # pylint: disable=broad-except
      self._write_failed = True
      raise _write_error(self.directory, e, self.all_steps()) from e

  def step_path(self, step):
    return self.directory / str(step)

  def _restore_step(self, step, abstract_fn):
    """(state, meta, None), or (None, None, why it failed). Orbax's restores are
    collectives: every process calls this for a step, or none does."""
    try:
      meta = self.restore_meta(step)
    except Exception as e:  # pylint: disable=broad-except
      return None, None, e
    abstract = abstract_fn(meta)  # its errors (a changed config) propagate
    try:
      return (*self._restore_unverified(abstract, step), None)
    except Exception as e:  # pylint: disable=broad-except
      return None, None, e

  def _local_damage(self, step):
    """What this process alone can see wrong with a step's files (None: nothing):
    a missing commit marker (orbax lists a step by its name alone and writes the
    marker last; NFS may show it late), or a file it cannot open and read."""
    path = self.step_path(step)
    try:
      if not ocp.step.is_path_finalized(
          path, temporary_path_cls=ocp.path.atomicity.CommitFileTemporaryPath):
        return DamagedCheckpointError(f"no {ocp.path.atomicity.COMMIT_SUCCESS_FILE} (an "
                                      "unfinished or partly copied save)")
      for file in _files(path):
        with file.open("rb") as f:
          f.read(1)
    except OSError as e:
      return e
    return None

  def _skip(self, step, error):
    path = self.step_path(step)
    why = f"{type(error).__name__}: {str(error).splitlines()[0][:300] if str(error) else ''}"
    log.warning("skipping damaged checkpoint %s (%s); trying the one before", path, why)
    return path, why

  def _set_aside(self, skipped):
    """Renames damaged steps out of orbax's view: kept for a person, and no later
    save of the same step collides with them or garbage-collects good ones."""
    if not skipped:
      return
    stamp = time.strftime("%Y%m%d-%H%M%S")
    if jax.process_index() == 0:  # every process holds the same list: they voted on it
      for path, _ in skipped:
        target = path.parent / f"{DAMAGED_PREFIX}{path.name}-{stamp}"
        path.rename(target)
        log.warning("moved damaged checkpoint %s to %s (kept, not deleted)", path, target)
    distributed.barrier("dit_jax_set_aside_damaged")  # the renames done, for all
    self.manager.reload()


def _split(state):
  """{item: the part of the state it holds}; items with none of their keys are left out."""
  unknown = set(state) - {k for keys in ITEMS.values() for k in keys}
  if unknown:
    raise ValueError(f"no checkpoint item holds the state's {sorted(unknown)}; add them to ITEMS")
  parts = {item: {k: state[k] for k in keys if k in state} for item, keys in ITEMS.items()}
  return {item: part for item, part in parts.items() if part}


def _files(directory):
  """Every file under directory (epath has no recursive glob: on GCS it would list
  each level anyway)."""
  for child in directory.iterdir():
    if child.is_dir():
      yield from _files(child)
    else:
      yield child


def _write_error(directory, error, steps):
  text = str(error).splitlines()[0] if str(error) else type(error).__name__
  full = getattr(error, "errno", None) in (errno.ENOSPC, errno.EDQUOT) or any(
      s in str(error) for s in ("No space left", "os_error_code='28'", "Disk quota"))
  return CheckpointWriteError(
      f"a checkpoint could not be written to {directory}"
      + (": the disk is full" if full else "") + f" ({text[:500]}). The complete "
      f"checkpoints there (steps {steps}) are kept; fix this and run the same command "
      "again to resume from the newest.")


_quiet_users = 0  # open Checkpointers; the filter is installed while there are any
_previous_hook = None


def _quiet_hook(unraisable):
  exc, code = unraisable.exc_value, getattr(unraisable.object, "cr_code", None)
  if not ((isinstance(exc, RuntimeError) and str(exc) == "Event loop is closed") or
          (code is not None and "orbax" in code.co_filename)):
    _previous_hook(unraisable)


def _quiet_abandoned_io(on):
  """When one array of a save or restore fails, orbax abandons the others' coroutines,
  which print thousands of lines of 'Event loop is closed' and hide the real error.

  Filters those out of sys.unraisablehook while any Checkpointer is open, handing
  everything else to the hook that was there, which comes back when the last one
  closes (unless something replaced ours meanwhile: then it is left alone).
  """
  global _quiet_users, _previous_hook  # pylint: disable=global-statement
  if on:
    if _quiet_users == 0:
      _previous_hook, sys.unraisablehook = sys.unraisablehook, _quiet_hook
    _quiet_users += 1
    return
  _quiet_users -= 1
  if _quiet_users == 0 and sys.unraisablehook is _quiet_hook:
    sys.unraisablehook = _previous_hook


def _two_sums(x, xp):
  """[sum, weighted sum] of the raw bits of x as uint32, mod 2**32, in jax.numpy (jitted)
  or numpy (`xp`): integer sums, exact in any order, so both give the same numbers."""
  if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
    x = jax.random.key_data(x)
  x = xp.asarray(x)
  if x.dtype == xp.bool_:
    bits = x.reshape(-1).astype(xp.uint32)
  else:
    unsigned = {1: xp.uint8, 2: xp.uint16, 4: xp.uint32, 8: xp.uint32}[x.dtype.itemsize]
    raw = (jax.lax.bitcast_convert_type(x, unsigned) if xp is jnp
           else np.ascontiguousarray(x).view(unsigned))
    bits = raw.reshape(-1).astype(xp.uint32)
  # odd weights: changing any single element always changes the weighted sum
  w = xp.arange(bits.size, dtype=xp.uint32) * xp.uint32(0x3C6EF362) + xp.uint32(1)
  return xp.stack([bits.sum(dtype=xp.uint32), (bits * w).sum(dtype=xp.uint32)])


@jax.jit
def _checksum_arrays(tree):
  return jax.tree.map(lambda x: _two_sums(x, jnp), tree)


def _on_host(x):
  return (isinstance(x, jax.Array) and x.is_fully_addressable
          and all(d.platform == "cpu" for d in x.devices()))


def checksums(state):
  """{'params/...': [sum, weighted sum]} of the bits of every array, mod 2**32.

  Exact integer arithmetic, so the same on any device, sharding or reduction order.
  Arrays a CPU process holds whole are summed in numpy; the rest in one jitted program.
  """
  leaves = jax.tree.leaves(state)
  if leaves and all(_on_host(x) for x in leaves):
    # no compile per state layout (a sweep's points and prunes each have their own)
    sums = jax.tree.map(lambda x: _two_sums(x, np), state)
  else:
    sums = sharding.gather(_checksum_arrays(state))
  flat, _ = jax.tree_util.tree_flatten_with_path(sums)
  return {_name(path): [int(v) for v in value] for path, value in flat}


def _name(path):
  """'opt_state/1/0/mu/...': the same whether lists come back as lists or as dicts."""
  return "/".join(str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k))))
                  for k in path)


def _verify(state, meta, path):
  """Compares the restored arrays (all of the state, or some of its keys) with the
  checksums taken at save time."""
  expected = meta.get("checksums")
  if expected is None:  # written before checksums existed
    return
  got = checksums(state)
  expected = {k: v for k, v in expected.items() if k.split("/")[0] in state}  # those read
  bad = sorted(k for k in set(expected) | set(got) if expected.get(k) != got.get(k))
  if bad:
    raise DamagedCheckpointError(
        f"{path}: {len(bad)} array(s) differ from their checksums at save time, "
        f"e.g. {bad[0]}")
