"""Sampling at scale: N samples of a workdir's EMA weights into ADM-format shards.

Shard i holds samples [i * batch, (i + 1) * batch) (the last one cut at N), drawn
with key fold_in(seed, i) and, for uniform labels, numpy's generator (seed, i):
any process, on any run, draws the same images for a shard. So each process
draws its share (shards i with i % processes == its index) on its own devices,
without talking to the others, and a restarted run skips the shards on disk.
One compile: every shard is a full batch.
"""
import hashlib
import os
import time

import jax
import numpy as np
import tqdm
from flax import nnx
from jax.experimental import multihost_utils

from dit_jax import adm
from dit_jax import fid as fid_lib
from dit_jax import sampling
from dit_jax import sharding
from dit_jax import workdir as workdir_lib
from dit_jax.configlib import ConfigError
from dit_jax.models import vae as vae_lib


def read_labels(path, num, num_classes):
  """Given labels: an .npy of ints, or an .npz with arr_1 (ADM) or labels; num of them."""
  if not os.path.isfile(path):
    raise ConfigError(f"--labels {path} is not a file: give an .npy of class ids or an "
                      ".npz with arr_1 or labels.")
  loaded = np.load(path)
  if isinstance(loaded, np.lib.npyio.NpzFile):
    with loaded as f:
      key = next((k for k in ("arr_1", "labels") if k in f.files), None)
      if key is None:
        raise ConfigError(f"--labels {path} has no arr_1 or labels array ({f.files}).")
      loaded = f[key]
  labels = np.asarray(loaded).reshape(-1)
  if len(labels) < num or not np.issubdtype(labels.dtype, np.integer):
    raise ConfigError(f"--labels {path}: need {num} integer labels, found {len(labels)} "
                      f"of {labels.dtype}.")
  labels = labels[:num].astype(np.int32)
  if labels.min() < 0 or labels.max() >= num_classes:
    raise ConfigError(f"--labels {path}: labels must lie in [0, {num_classes}) for this "
                      f"model, found {labels.min()}..{labels.max()}.")
  return labels


def _shard_labels(labels, index, batch, seed, num_classes):
  """The batch's labels: given ones (padded), or uniform from the shard's own generator."""
  if not num_classes:
    return None
  if labels is None:
    return np.random.default_rng([seed, index]).integers(0, num_classes, batch, np.int32)
  part = labels[index * batch:(index + 1) * batch]
  return np.concatenate([part, np.zeros(batch - len(part), np.int32)])


def _fingerprint(path):
  if path is None:
    return None
  with open(path, "rb") as f:
    return hashlib.sha1(f.read()).hexdigest()[:16]


def _decoder(vae_path, mesh):
  """A jitted latents -> images decode of the VAE, its weights replicated on the mesh."""
  model = vae_lib.load(vae_path)
  graphdef, state = nnx.split(model)
  state = jax.device_put(state, sharding.replicated(mesh))
  return jax.jit(lambda z: nnx.merge(graphdef, state).decode(z))


def sample_to_shards(workdir, out, num, batch=256, seed=0, method=None, steps=None,
                     guidance=None, labels=None, vae=None, merge=False, max_shards=None):
  """Writes this process's missing shards of `num` samples into `out`; returns
  (shards written now, shards in the folder, merged file or None)."""
  config, setup, state, meta = workdir_lib.load(workdir)
  arch, scfg = setup.arch, sampling.sample_config(config, method, steps, guidance)
  vae = vae or config.data.vae or None  # a latent run decodes with its own VAE
  if guidance is not None and not arch.num_classes:
    raise ConfigError("--guidance needs a class-conditional model; this one has no labels.")
  if labels is not None and not arch.num_classes:
    raise ConfigError("--labels needs a class-conditional model; this one has no labels.")
  given = read_labels(labels, num, arch.num_classes) if labels is not None else None
  if vae is None and (meta["value_range"] is None or arch.channels not in (1, 3)):
    raise ConfigError(f"this model draws {arch.channels}-channel samples without a pixel "
                      "range (latents): pass --vae with the autoencoder's .safetensors file.")
  # each process samples on its own devices: no collective, no waiting on the others
  mesh = sharding.make_mesh(devices=jax.local_devices())
  batch = sharding.pad_to(batch, mesh)
  params = jax.device_put(sharding.gather(state["ema"]), sharding.replicated(mesh))
  decode = _decoder(vae, mesh) if vae is not None else None
  value_range = (-1, 1) if vae is not None else meta["value_range"]
  settings = {"workdir_step": meta["step"], "num": num, "batch": batch, "seed": seed,
              "method": scfg.method, "steps": scfg.steps, "labels": _fingerprint(labels),
              "guidance": scfg.guidance if arch.num_classes else None,
              "vae": _fingerprint(vae)}
  # every process checks (each writes shards); one records them
  adm.check_settings(out, settings, write=workdir_lib.is_writer())
  total = -(-num // batch)
  done = set(adm.finished_shards(out))
  mine = [i for i in range(total)
          if i % jax.process_count() == jax.process_index() and i not in done]
  mine = mine[:max_shards] if max_shards is not None else mine
  sampler = sampling.make_labeled_sampler(setup, scfg, batch, None if vae else value_range, mesh)
  key = jax.random.PRNGKey(seed)
  bar = tqdm.tqdm(mine, unit="shard", disable=not mine or not workdir_lib.is_writer(),
                  desc=f"sampling {num} in {total} shards of {batch}")
  start = time.perf_counter()
  for n, i in enumerate(bar, 1):
    y = _shard_labels(given, i, batch, seed, arch.num_classes)
    x = sampler(params, jax.random.fold_in(key, i), y)
    if decode is not None:
      x = decode(x)
    images = fid_lib.to_uint8(np.asarray(x), value_range)
    keep = min(batch, num - i * batch)
    adm.write_shard(out, i, images[:keep], None if y is None else y[:keep])
    bar.set_postfix(images_per_s=f"{n * batch / (time.perf_counter() - start):.1f}")
  if jax.process_count() > 1:  # the merge below needs every process's shards
    multihost_utils.sync_global_devices("dit_jax_sample_shards")
  on_disk = adm.finished_shards(out)
  merged = None
  if merge and len(on_disk) == total and workdir_lib.is_writer():
    merged = adm.merge(out, num)
  return len(mine), len(on_disk), merged
