"""Asserts that bench/vs_torch/torch_reference.py computes what dit_jax computes, row by row.

Run by the bench (stack_worker.py --stack check) before anything is timed, in a
process of its own because it loads both stacks. On weights moved off the adaLN-Zero
init (where every block is the identity and the output is 0, which would hide a
difference): equal parameter counts; forward outputs equal to 1e-5; for training rows
the loss, the gradients, and the parameters and EMA after two clipped AdamW steps
with weight decay, from the same times and noise.
"""
import jax
import numpy as np
import optax
import torch

from bench.vs_torch import jax_side
from bench.vs_torch import rows
from bench.vs_torch import torch_reference as ref
from bench.vs_torch import torch_side
from dit_jax import diffusion, state as state_lib
from dit_jax.models import dit

FORWARD_ATOL = 1e-5


def perturbed(params, key, scale=0.02):
  """Weights off the zero init, so every block and the final layer contribute."""
  leaves, treedef = jax.tree.flatten(params)
  keys = jax.random.split(key, len(leaves))
  return treedef.unflatten([p + scale * jax.random.normal(k, p.shape)
                            for p, k in zip(leaves, keys)])


def to_flat(params):
  return jax_side.flatten(params)


def check_forward(row, params, model, batch=4):
  x, t = rows.row_inputs(dict(row, batch=batch), seed=1)
  graphdef, _ = dit.abstract_model(jax_side.arch_for(row))
  out_jax = np.asarray(jax.jit(lambda p: dit.apply(graphdef, p, x, t))(params))
  with torch.no_grad():
    out_torch = model(torch.from_numpy(x), torch.from_numpy(t)).numpy()
  diff = float(np.abs(out_jax - out_torch).max())
  assert diff <= FORWARD_ATOL, f"{row['name']}: forward differs by {diff}"
  assert float(np.abs(out_jax).max()) > 0.1, "outputs near 0 would hide a difference"
  return diff


def jax_two_steps(row, params, x0, t, noise, config):
  """Loss, gradients, and (params, ema) after two steps, as train_step.train_step updates."""
  setup = state_lib.make_setup(config, jax_side.arch_for(row))
  loss_fn = lambda p: diffusion.per_example_loss(
      state_lib.make_eps_fn(setup, p), setup.sched, x0, t, noise).mean()
  opt_state, ema, d = setup.tx.init(params), params, config.train.ema_decay
  first = None
  for _ in range(2):
    loss, grads = jax.jit(jax.value_and_grad(loss_fn))(params)
    first = first or (loss, grads)
    updates, opt_state = setup.tx.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    ema = jax.tree.map(lambda e, p: d * e + (1 - d) * p, ema, params)
  return first, params, ema


def _max_rel(jax_flat, torch_tensors):
  """Largest difference per tensor, relative to that tensor's largest magnitude."""
  worst = 0.0
  for path, a in jax_flat.items():
    b = torch_tensors[path].detach().numpy()
    a = ref.to_torch_layout(path, a)
    worst = max(worst, float(np.abs(a - b).max()) / max(float(np.abs(a).max()), 1e-12))
  return worst


def check_train(row, params, model, flat, batch=4):
  config = jax_side.config_for(row)
  config.train.warmup_steps, config.train.weight_decay = 0, 0.1  # steps that move, decay
  x0, _ = rows.row_inputs(dict(row, batch=batch), seed=2)
  rng = np.random.default_rng(3)
  t = rng.integers(0, 1000, batch).astype(np.int32)
  noise = rng.standard_normal(x0.shape).astype(np.float32)
  (loss, grads), new_params, ema = jax_two_steps(row, params, x0, t, noise, config)
  trainer = ref.Trainer(model, flat, lr=config.train.lr, warmup=0, weight_decay=0.1,
                        grad_clip=config.train.grad_clip, ema_decay=config.train.ema_decay)
  named = {p: q for p, q in zip(flat, trainer.params)}
  x0_t, t_t, noise_t = (torch.from_numpy(a) for a in (x0, t.astype(np.int64), noise))
  loss_t = trainer.loss_fn(x0_t, t_t, noise_t)
  loss_t.backward()
  grad_rel = _max_rel(to_flat(grads), {p: q.grad for p, q in named.items()})
  trainer.step(x0_t, t_t, noise_t)
  trainer.step(x0_t, t_t, noise_t)
  step_diff = max(float(np.abs(ref.to_torch_layout(p, a) - named[p].detach().numpy()).max())
                  for p, a in to_flat(new_params).items())
  ema_t = dict(zip(flat, trainer.ema))
  ema_diff = max(float(np.abs(ref.to_torch_layout(p, a) - ema_t[p].numpy()).max())
                 for p, a in to_flat(ema).items())
  loss_diff = abs(float(loss) - loss_t.item())
  assert loss_diff <= 1e-5 * max(1.0, float(loss)), f"loss differs by {loss_diff}"
  assert grad_rel <= 1e-3, f"gradients differ by {grad_rel} of their largest entry"
  # Adam divides each gradient entry by its own size, so entries near 0 carry float noise
  # into a step of up to lr: allow 10% of one step
  tol = 0.1 * config.train.lr
  assert step_diff <= tol and ema_diff <= tol, (step_diff, ema_diff)
  return {"loss_abs_diff": loss_diff, "grad_max_rel_diff": grad_rel,
          "params_after_2_steps_max_abs_diff": step_diff, "ema_max_abs_diff": ema_diff}


def check_row(row, params_path):
  """Writes the row's timing parameters to params_path; checks both models agree."""
  torch.set_num_threads(len(__import__("os").sched_getaffinity(0)))
  arch = jax_side.arch_for(row)
  params = dit.init_params(arch, jax.random.PRNGKey(0))
  if row["kind"] != "train":  # sampling and forward rows run trained-looking weights
    params = perturbed(params, jax.random.PRNGKey(7))
  np.savez(params_path, **to_flat(params))
  moved = perturbed(params, jax.random.PRNGKey(8))
  flat = to_flat(moved)
  model, count = torch_side.build(row, flat)
  assert count == dit.num_params(arch), (count, dit.num_params(arch))
  out = {"row": row["name"], "params": count, "flops_per_image": dit.flops_per_image(arch),
         "forward_max_abs_diff": check_forward(row, moved, model)}
  if row["kind"] == "train":
    out.update(check_train(row, moved, model, flat))
  return {k: (float(f"{v:.3g}") if isinstance(v, float) else v) for k, v in out.items()}
