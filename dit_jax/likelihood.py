"""A diffusion model's likelihood of data, through the probability-flow ODE.

Copying the training set cannot win this measure: a model that memorizes puts
its mass on the training points and pays for it on held-out ones, so
test_nll - train_nll (nll_gap) is a continuous memorization signal, and
test_nll a quality measure (Song et al. 2021, "Score-Based Generative Modeling
through SDEs", section 4.3).

The ODE is written in y = x / a against lambda = log(s / a), where it reads
dy/dlambda = sigma * eps_hat(a y, t) (the DDIM direction) and is smooth in
lambda for every schedule here; a^2 + s^2 = 1 for all of them, so
a = (1 + sigma^2)^-1/2. Integrating a data point from the smallest noise level
to the largest and adding the divergence integral gives
  log p_0(x) = log N(x_T; 0, I) + D log(a_T / a_0) + int sigma a div_x eps_hat dlambda
(the density at the schedule's smallest noise level, whose s is 0.01 for
ddpm_linear: below the 2/256 step of 8-bit pixels in [-1, 1]).
The divergence is Hutchinson's estimate z^T J z with one Rademacher z per point
held fixed along the path, or the exact trace where D is small.
"""
import dataclasses
import functools
import math

import diffrax
import jax
import jax.numpy as jnp
import numpy as np

from dit_jax.configlib import ConfigError, check_choice, check_int
from dit_jax.models import dit

DIVERGENCES = ("hutchinson", "exact")
SOLVERS = {"tsit5": diffrax.Tsit5, "heun": diffrax.Heun, "dopri5": diffrax.Dopri5}
PIXEL_LEVELS = 256  # uint8 images: the dequantization grid


@dataclasses.dataclass(frozen=True)
class Options:
  """How the ODE is solved; `steps` > 0 fixes the step count, else adaptive at rtol."""
  solver: str = "tsit5"
  rtol: float = 1e-3
  atol: float = 1e-3
  steps: int = 0
  divergence: str = "hutchinson"
  batch: int = 500  # points per jitted solve (memory: a DiT forward and JVP on them)


def check_config(ecfg):
  """config.eval's likelihood fields: ConfigError naming the field and the fix."""
  check_int(ecfg.nll_num, "eval.nll_num", low=0)
  check_choice(ecfg.nll_solver, "eval.nll_solver", tuple(SOLVERS))
  check_choice(ecfg.nll_divergence, "eval.nll_divergence", DIVERGENCES)
  check_int(ecfg.nll_steps, "eval.nll_steps", low=0)
  if not ecfg.nll_rtol > 0:
    raise ConfigError(f"config.eval.nll_rtol={ecfg.nll_rtol}: use a positive tolerance "
                      "such as 1e-3.")


def options_from_config(ecfg):
  check_config(ecfg)
  return Options(solver=ecfg.nll_solver, rtol=float(ecfg.nll_rtol), atol=float(ecfg.nll_rtol),
                 steps=int(ecfg.nll_steps), divergence=ecfg.nll_divergence)


def lambda_range(sched):
  """(lambda at the smallest noise level, lambda at the largest) of the schedule."""
  if sched.discrete:
    a, s = sched.tables()
    last = int(sched.grid(2)[0])  # the sampler's first time: the last unclipped beta
    return math.log(s[0] / a[0]), math.log(s[last] / a[last])
  lam = lambda t: 0.5 * math.log(math.expm1(t))
  return lam(sched.t0), lam(sched.t_max)


def time_of_lambda(sched):
  """lambda -> schedule time: exact for vp (t = log(1 + sigma^2)); for the discrete
  schedules a fractional index, linear in lambda between the table's entries, which
  the network reads through net_time like any other time."""
  if not sched.discrete:
    return lambda lam: jnp.log1p(jnp.exp(2.0 * lam))
  a, s = sched.tables()
  lam_table = jnp.asarray(np.log(s / a), jnp.float32)
  index = jnp.arange(len(a), dtype=jnp.float32)
  return lambda lam: jnp.interp(lam, lam_table, index)


def _divergence(f, x_BD, key, how):
  """(f(x), div f at x) per row; f maps (B, D) -> (B, D) row by row."""
  if how == "exact":
    out, jvp = jax.linearize(f, x_BD)
    d = x_BD.shape[1]
    # the trace as D Jacobian-vector products along the basis, one row at a time
    diag = jax.vmap(lambda e: jnp.sum(jvp(jnp.broadcast_to(e, x_BD.shape)) * e, -1))(
        jnp.eye(d, dtype=x_BD.dtype))
    return out, diag.sum(0)
  z = jax.random.rademacher(key, x_BD.shape, x_BD.dtype)
  out, jz = jax.jvp(f, (x_BD,), (z,))
  return out, jnp.sum(z * jz, -1)


@functools.partial(jax.jit, static_argnames=("eps_fn", "sched", "shape", "opts"))
def _solve(eps_fn, sched, shape, opts, params, x_BD, key):
  """Per-point log p(x) in nats (the sum over the D dimensions) and the step count.

  params are an argument, not constants of the program: one compile serves every
  checkpoint of an architecture (and the persistent cache every run)."""
  lam0, lam1 = lambda_range(sched)
  t_of = time_of_lambda(sched)
  b, d = x_BD.shape

  def vector_field(lam, state, args):
    y, _ = state
    sigma = jnp.exp(lam)
    a = jax.lax.rsqrt(1.0 + sigma * sigma)
    t = jnp.full((b,), t_of(lam))
    as_b = lambda v: jnp.full((b,), v)
    f = lambda x: eps_fn(params, x.reshape((b,) + shape), t, as_b(a),
                         as_b(sigma * a)).reshape(b, d)
    eps, div = _divergence(f, a * y, key, opts.divergence)
    return sigma * eps, sigma * a * div

  a0 = 1.0 / math.sqrt(1.0 + math.exp(2 * lam0))
  a1 = 1.0 / math.sqrt(1.0 + math.exp(2 * lam1))
  y0 = (x_BD / a0, jnp.zeros((b,), x_BD.dtype))
  solver = SOLVERS[opts.solver]()
  if opts.steps:
    kw = dict(dt0=(lam1 - lam0) / opts.steps, stepsize_controller=diffrax.ConstantStepSize())
  else:
    kw = dict(dt0=None, stepsize_controller=diffrax.PIDController(rtol=opts.rtol,
                                                                  atol=opts.atol))
  sol = diffrax.diffeqsolve(diffrax.ODETerm(vector_field), solver, lam0, lam1, y0=y0,
                            saveat=diffrax.SaveAt(t1=True), max_steps=4096, **kw)
  y1, div_integral = sol.ys[0][-1], sol.ys[1][-1]
  x1 = a1 * y1
  log_prior = -0.5 * jnp.sum(x1 * x1, -1) - 0.5 * d * math.log(2 * math.pi)
  return log_prior + d * math.log(a1 / a0) + div_integral, sol.stats["num_steps"]


@dataclasses.dataclass(frozen=True)
class ModelEps:
  """eps_fn(params, x, t, a, s) of a DiT for log_likelihood (hashable: a static jit
  argument, so one compile serves every call with the same architecture).

  Built on a graph without the CPU cotangent fence: the fence is a custom_vjp,
  which forward-mode autodiff (the divergence's JVP) cannot pass, and it only
  changes how the backward pass is fused, never a value. Unconditional: a
  class-conditional model is read with its null label.
  """
  arch: dit.Arch
  sched: object

  def __call__(self, params, x, t, a, s):
    graphdef, _ = _fence_free_graph(self.arch)
    return dit.apply(graphdef, params, x, self.sched.net_time(t))


@functools.lru_cache(maxsize=8)
def _fence_free_graph(arch):
  return dit.abstract_model(arch, fence=False)


def log_likelihood(eps_fn, sched, x, key, opts=Options(), params=()):
  """log p(x) per point in nats over all its dimensions, and the solver's step counts.

  eps_fn(params, x, t, a, s) -> eps_hat, hashable (a module-level function or a
  frozen dataclass such as ModelEps); x shaped like the points (B, ...), t in
  schedule time, a and s the (B,) signal and noise scales at t (closed-form
  scores read them; a network reads t). Points go through in batches of
  opts.batch, each point with its own Rademacher probe.
  """
  x = np.asarray(x, np.float32)
  shape = tuple(x.shape[1:])
  size = min(opts.batch, len(x))  # every batch padded to one size: one compile
  out, steps = [], []
  for i in range(0, len(x), size):
    part = x[i:i + size].reshape(-1, int(np.prod(shape)))
    pad = size - len(part)
    part = np.concatenate([part, np.repeat(part[-1:], pad, 0)]) if pad else part
    logp, n = _solve(eps_fn, sched, shape, opts, params, jnp.asarray(part),
                     jax.random.fold_in(key, i))
    out.append(np.asarray(logp)[:size - pad])
    steps.append(int(n))
  return np.concatenate(out), steps


def dequantize(x, key, value_range, levels=PIXEL_LEVELS):
  """Uniform dequantization of images stored as `levels` integer levels, mapped to
  value_range: each pixel moves uniformly within its own bin, so a continuous
  density of the result bounds the discrete probability of the pixel values."""
  lo, hi = value_range
  width = (hi - lo) / (levels - 1)  # model-space distance between adjacent levels
  u = np.asarray(jax.random.uniform(key, np.shape(x)), np.float32)
  return np.asarray(x, np.float32) + (u - 0.5) * width, width


def summarize(logp, dims, bin_width=None):
  """NLL per dimension with its standard error over points: nats/dim for
  continuous data, bits/dim for dequantized images (bin_width given), where the
  discrete probability of a pixel's bin is at least its density times the bin."""
  nll = -np.asarray(logp, np.float64) / dims
  if bin_width is not None:
    nll = (nll - math.log(bin_width)) / math.log(2)
  return float(nll.mean()), float(nll.std(ddof=1) / math.sqrt(len(nll))) if len(nll) > 1 else 0.0


def model_nll(eps_fn, sched, splits, key, opts, value_range=None, params=()):
  """test_nll, train_nll, nll_gap and their standard errors (eval.json fields).

  splits: {"test": x, "train": x}. Images (value_range given) are dequantized
  and reported in bits/dim; raw vectors in nats/dim.
  """
  out, steps = {}, []
  for i, (name, x) in enumerate(splits.items()):
    k_deq, k_ode = jax.random.split(jax.random.fold_in(key, i))
    width = None
    if value_range is not None:
      x, width = dequantize(x, k_deq, value_range)
    logp, n = log_likelihood(eps_fn, sched, x, k_ode, opts, params)
    out[f"{name}_nll"], out[f"{name}_nll_se"] = summarize(logp, np.prod(x.shape[1:]), width)
    out[f"{name}_nll_num"] = len(x)
    steps += n
  if "test_nll" in out and "train_nll" in out:
    out["nll_gap"] = out["test_nll"] - out["train_nll"]
    out["nll_gap_se"] = math.hypot(out["test_nll_se"], out["train_nll_se"])
  out["nll_unit"] = "bits/dim (uniformly dequantized)" if value_range is not None else "nats/dim"
  solver = (f"{opts.solver}, {opts.steps} steps" if opts.steps
            else f"{opts.solver}, rtol {opts.rtol:g}")
  out["nll_method"] = f"probability-flow ODE ({solver}; {max(steps)} steps), " \
                      f"{opts.divergence} divergence"
  return out
