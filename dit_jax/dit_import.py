"""Imports a facebookresearch/DiT checkpoint (a torch .pt file) into a dit_jax workdir.

Reads the file without torch (dit_jax.torchscript's restricted unpickler), in
either form the project ships: the EMA state dict alone (what its download.py
serves, e.g. DiT-XL-2-256x256.pt) or a train.py checkpoint {"model", "ema", "opt",
"args"}. The architecture comes from the tensors: hidden size, depth, patch, MLP
width, channels, image side and classes; the head count is not in any shape, so
it is taken from DiT's variant table (S/B/L/XL) or given.

What the conversion keeps and what it drops:
- learn_sigma: DiT's output has 2C channels, eps then the variance interpolation
  of Nichol & Dhariwal. dit_jax trains and samples eps only (fixed posterior
  variance), so the variance half of the final layer is dropped; the eps half is
  the same function (tests/test_interop.py checks it against the reference).
- the label table's last row is the null class (classifier-free guidance).
- input conventions: DiT feeds the integer step to its timestep features and puts
  the column in the first half of its position table; the workdir's config sets
  model.time_scale = num_steps - 1 and model.pos_order = "col_row" to match.
The workdir holds one checkpoint at step 0 whose params and EMA are the file's.
"""
import math
import os

import jax
import numpy as np

from dit_jax import checkpointing
from dit_jax import configlib
from dit_jax import latents
from dit_jax import safetensors
from dit_jax import state as state_lib
from dit_jax import torchscript
from dit_jax import workdir as workdir_lib
from dit_jax.configlib import ConfigError
from dit_jax.models import dit

NUM_STEPS = 1000  # DiT's linear schedule: betas 1e-4 .. 0.02 over 1000 steps
# (hidden, depth) -> heads of DiT's S/B/L/XL
_HEADS = {(h, d): n for h, d, n in dit.VARIANTS.values()}


def read_state_dicts(path):
  """(params, ema) state dicts of `path` ({name: float32 array}); equal for an EMA-only file."""
  if not os.path.isfile(path):
    raise ConfigError(f"--checkpoint {path!r} is not a file: give the .pt file that "
                      "facebookresearch/DiT's download.py or train.py wrote.")
  try:
    root = torchscript.load(path)
  except (ValueError, OSError) as e:
    raise ConfigError(f"--checkpoint {path}: {e}") from e
  if isinstance(root, dict) and "ema" in root:
    params, ema = root.get("model", root["ema"]), root["ema"]
  else:
    params = ema = root
  for name, sd in (("model", params), ("ema", ema)):
    if not isinstance(sd, dict) or "x_embedder.proj.weight" not in sd:
      raise ConfigError(f"--checkpoint {path}: its {name} weights are not a DiT state dict "
                        "(no x_embedder.proj.weight); is it a facebookresearch/DiT file?")
  as32 = lambda sd: {k: np.asarray(v, np.float32) for k, v in sd.items()}
  return as32(params), as32(ema)


def infer(sd, heads=None):
  """(Arch, pos_order, learn_sigma) of a DiT state dict, from its tensor shapes."""
  hidden, channels, patch, _ = sd["x_embedder.proj.weight"].shape
  depth = len({k.split(".")[1] for k in sd if k.startswith("blocks.")})
  tokens = sd["pos_embed"].shape[1]
  grid = math.isqrt(tokens)
  if grid * grid != tokens or patch not in dit.PATCHES:
    raise ConfigError(f"pos_embed has {tokens} tokens and the patch is {patch}: dit_jax "
                      f"needs a square grid and a patch in {dit.PATCHES}.")
  if heads is None:
    if (hidden, depth) not in _HEADS:
      raise ConfigError(f"hidden size {hidden} and depth {depth} match none of DiT's "
                        "variants S/B/L/XL, and the head count is in no tensor's shape: "
                        "pass --heads.")
    heads = _HEADS[(hidden, depth)]
  if hidden % heads:
    raise ConfigError(f"--heads={heads} does not divide the hidden size {hidden}.")
  out = sd["final_layer.linear.weight"].shape[0] // (patch * patch)
  if out not in (channels, 2 * channels):
    raise ConfigError(f"final_layer.linear has {out} channels per pixel for {channels} "
                      "input channels: expected as many, or twice (learn_sigma).")
  rows = sd["y_embedder.embedding_table.weight"].shape[0]
  arch = dit.Arch(image_size=grid * patch, channels=channels, patch=patch, hidden=hidden,
                  head_dim=hidden // heads, heads=(heads,) * depth,
                  mlp=tuple(sd[f"blocks.{i}.mlp.fc1.weight"].shape[0] for i in range(depth)),
                  num_classes=rows - 1)
  return arch, _pos_order(sd["pos_embed"][0], hidden, grid), out == 2 * channels


def _pos_order(table, hidden, grid):
  for order in dit.POS_ORDERS:
    if np.allclose(table, dit.sincos_2d(hidden, grid, order), atol=1e-5):
      return order
  raise ConfigError("pos_embed is not the fixed sin-cos table DiT builds (either channel "
                    "order): a checkpoint with a learned position embedding can't be imported.")


def convert(sd, arch, learn_sigma):
  """A DiT state dict -> dit_jax's parameter tree (numpy), checking every name and shape."""
  d, p, c, k = arch.hidden, arch.patch, arch.channels, arch.head_dim
  used = set()

  def get(name):
    used.add(name)
    return sd[name]

  def linear(name):  # torch keeps (out, in); dit_jax multiplies x @ (in, out)
    return get(f"{name}.weight").T, get(f"{name}.bias")

  out = {"pos": get("pos_embed")}
  # patch vectors in dit_jax are (row, col, channel); the conv kernel is (D, C, p, p)
  out["patch_w"] = get("x_embedder.proj.weight").transpose(2, 3, 1, 0).reshape(p * p * c, d)
  out["patch_b"] = get("x_embedder.proj.bias")
  out["t_w1"], out["t_b1"] = linear("t_embedder.mlp.0")
  out["t_w2"], out["t_b2"] = linear("t_embedder.mlp.2")
  out["label_embed"] = get("y_embedder.embedding_table.weight")
  out["blocks"] = {}
  for i, heads in enumerate(arch.heads):
    b = f"blocks.{i}"
    qkv_w, qkv_b = linear(f"{b}.attn.qkv")
    proj_w, proj_b = linear(f"{b}.attn.proj")
    blk = {"qkv_w": qkv_w.reshape(d, 3, heads, k), "qkv_b": qkv_b.reshape(3, heads, k),
           "out_w": proj_w.reshape(heads, k, d), "out_b": proj_b}
    blk["fc1_w"], blk["fc1_b"] = linear(f"{b}.mlp.fc1")
    blk["fc2_w"], blk["fc2_b"] = linear(f"{b}.mlp.fc2")
    blk["ada_w"], blk["ada_b"] = linear(f"{b}.adaLN_modulation.1")
    out["blocks"][i] = blk
  out["final_ada_w"], out["final_ada_b"] = linear("final_layer.adaLN_modulation.1")
  w, bias = linear("final_layer.linear")
  if learn_sigma:  # each patch vector is (row, col, 2C): keep the first C, eps
    w = w.reshape(d, p * p, 2 * c)[..., :c].reshape(d, p * p * c)
    bias = bias.reshape(p * p, 2 * c)[:, :c].reshape(-1)
  out["final_w"], out["final_b"] = w, bias
  unused = sorted(set(sd) - used)
  if unused:
    raise ConfigError(f"the checkpoint has tensors this importer does not map: {unused[:5]}"
                      f"{' ...' if len(unused) > 5 else ''}; is it a facebookresearch/DiT "
                      "model of another version?")
  del out["pos"]  # checked by infer; dit_jax computes the table
  _check_shapes(out, arch)
  return out


def _check_shapes(params, arch):
  _, want = dit.abstract_model(arch)
  got_shapes = jax.tree.map(lambda x: x.shape, params)
  want_shapes = jax.tree.map(lambda x: tuple(x.shape), want)
  if got_shapes != want_shapes:
    raise ConfigError("the converted weights do not fit the inferred architecture "
                      f"{arch}; the checkpoint's shapes are inconsistent.")


def vae_channels(path):
  """Latent channels of a diffusers AutoencoderKL file (its post_quant_conv's width)."""
  shapes = safetensors.shapes(os.path.expanduser(path))
  if "post_quant_conv.weight" not in shapes:
    raise ConfigError(f"--vae {path} has no post_quant_conv: not a diffusers AutoencoderKL.")
  return shapes["post_quant_conv.weight"][0]


def make_config(arch, pos_order, data_name, vae=None):
  """The workdir's config: DiT's model, schedule and training recipe on `data_name`
  (images encoded by `vae` when given: the model's side is then the latents')."""
  config = configlib.base_config()
  config.data.name = data_name
  config.data.image_size, config.data.channels = arch.image_size, arch.channels
  if vae:
    config.data.vae = os.path.abspath(os.path.expanduser(vae))
    config.data.image_size = arch.image_size * latents.downsample(config.data.vae)
    config.data.channels = 3
  config.data.conditional = arch.num_classes > 0
  name = next((n for n, v in dit.VARIANTS.items()
               if v == (arch.hidden, arch.depth, arch.heads[0]) and n != "tiny"), "tiny")
  config.model.variant = f"{name}/{arch.patch}"
  config.model.hidden, config.model.depth = arch.hidden, arch.depth
  config.model.heads, config.model.mlp = arch.heads, arch.mlp
  config.model.time_scale = float(NUM_STEPS - 1)  # DiT's step index, exactly
  config.model.pos_order = pos_order
  config.diffusion.schedule, config.diffusion.num_steps = "ddpm_linear", NUM_STEPS
  # DiT's recipe: AdamW 1e-4 without decay, EMA 0.9999; its FID-50K used guidance 1.5
  config.train.lr, config.train.weight_decay, config.train.ema_decay = 1e-4, 0.0, 0.9999
  config.sample.method, config.sample.steps, config.sample.guidance = "ddpm", 250, 1.5
  return config


def import_checkpoint(checkpoint, workdir, heads=None, data_name="imagenet2012", vae=None):
  """Writes `workdir` (new or empty) from a DiT .pt file; returns (config, arch, learn_sigma).

  vae: the autoencoder the model's latents belong to (recorded as config.data.vae, so
  sampling, training and evaluation decode and encode with it).
  """
  if os.path.exists(workdir) and (not os.path.isdir(workdir) or os.listdir(workdir)):
    raise ConfigError(f"--workdir {workdir} exists and is not empty: import into a new "
                      "directory (nothing in this one was changed).")
  if vae and not os.path.isfile(os.path.expanduser(vae)):
    raise ConfigError(f"--vae {vae} is not a file: give the autoencoder's .safetensors.")
  params_sd, ema_sd = read_state_dicts(checkpoint)
  arch, pos_order, learn_sigma = infer(ema_sd, heads)
  if vae and arch.channels != vae_channels(vae):
    raise ConfigError(f"--vae {vae} has {vae_channels(vae)} latent channels but the "
                      f"checkpoint's model takes {arch.channels}.")
  config = make_config(arch, pos_order, data_name, vae)
  setup = state_lib.make_setup(config, arch)
  params, ema = convert(params_sd, arch, learn_sigma), convert(ema_sd, arch, learn_sigma)
  state = {"params": params, "ema": ema, "opt_state": setup.tx.init(params),
           "step": np.zeros((), np.int32), "rng": jax.random.PRNGKey(config.seed)}
  state = jax.tree.map(jax.numpy.asarray, state)
  # no run fingerprint: the weights are bound to no dataset, any data may fine-tune them
  meta = {"arch": arch.to_json(), "base_arch": arch.to_json(), "run": None, "step": 0,
          "data_position": 0, "data": data_name, "value_range": None, "pruned": None,
          "imported": {"file": os.path.basename(checkpoint), "learn_sigma_dropped": learn_sigma}}
  workdir = os.path.abspath(workdir)
  ckpt = checkpointing.Checkpointer(workdir_lib.path(workdir, workdir_lib.CHECKPOINTS),
                                    config.checkpoint.keep, async_save=False)
  try:
    ckpt.save(0, state, meta, force=True)
  finally:
    ckpt.close()
  workdir_lib.write_config(config, workdir)
  return config, arch, learn_sigma
