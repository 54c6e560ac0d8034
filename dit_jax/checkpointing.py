"""Orbax checkpoints of the whole train state plus a JSON record of the run.

Each step directory holds `state` (params, optimizer state, EMA, step, rng) and
`meta` (architecture, base architecture from the config, data position, and
anything else the run needs to rebuild its shapes before restoring arrays).
"""
import logging

log = logging.getLogger("dit_jax")

import jax
import orbax.checkpoint as ocp
from etils import epath


class Checkpointer:
  """A thin layer over ocp.CheckpointManager with asynchronous saves."""

  def __init__(self, directory, keep=3, async_save=True):
    self.directory = epath.Path(directory)
    self.manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=True,
            enable_async_checkpointing=async_save))

  def latest_step(self):
    return self.manager.latest_step()

  def all_steps(self):
    return list(self.manager.all_steps())

  def restore_meta(self, step=None):
    step = self.latest_step() if step is None else step
    out = self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
    return out["meta"]

  def restore(self, abstract_state, step=None):
    """Restores arrays into the shapes and shardings of `abstract_state`."""
    step = self.latest_step() if step is None else step
    out = self.manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state),
        meta=ocp.args.JsonRestore()))
    return out["state"], out["meta"]

  def save(self, step, state, meta, force=False):
    saved = self.manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)), force=force)
    if saved:
      log.info("checkpoint at step %d queued in %s", step, self.directory)
    return saved

  def reached_preemption(self, step):
    return self.manager.reached_preemption(step)

  def wait(self):
    self.manager.wait_until_finished()

  def close(self):
    self.manager.wait_until_finished()
    self.manager.close()


def abstract_with_shardings(abstract_state, shardings):
  return jax.tree.map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
      abstract_state, shardings)
