"""Noise schedules, the denoising loss and samplers.

Two families share one interface, `x_t = a(t) x_0 + s(t) eps`:
- "vp": the paper's continuous OU process, a_t = exp(-t/2), s_t^2 = 1 - exp(-t),
  t in [t0, t_max] (continuous time);
- "ddpm_linear" / "ddpm_cosine": the discrete DDPM schedules, t an integer index.
The network sees `net_time(t)` in [0, 1] for either family.
"""
import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from dit_jax.configlib import ConfigError, check_choice, check_int

SCHEDULES = ("vp", "ddpm_linear", "ddpm_cosine")
WEIGHTINGS = ("eps", "score")
SAMPLERS = ("ddpm", "ddim", "heun")
BETA_MAX = 0.999  # the cosine schedule's clip (Nichol & Dhariwal 2021)


@dataclasses.dataclass(frozen=True)
class Schedule:
  kind: str = "ddpm_linear"
  num_steps: int = 1000  # discrete schedules only
  t0: float = 1e-3  # vp only
  t_max: float = 10.0  # vp only: a_T = exp(-5) ~ 0.007

  @property
  def discrete(self):
    return self.kind != "vp"

  def _betas(self):
    n = self.num_steps
    if self.kind == "ddpm_linear":
      return np.linspace(1e-4, 0.02, n, dtype=np.float64)
    # cosine schedule of Nichol & Dhariwal, betas clipped at 0.999
    f = lambda i: np.cos((i / n + 0.008) / 1.008 * np.pi / 2) ** 2
    return np.clip(1.0 - f(np.arange(1, n + 1)) / f(np.arange(n)), 0.0, BETA_MAX)

  def tables(self):
    """(a, s) of every discrete time, float64.

    Computed in float64 before any cast: in float32, s = sqrt(1 - alpha_bar)
    cancels at small t (8e-5 relative error at t = 0 of ddpm_linear, against
    6e-8 for a correctly rounded float32).
    """
    log_ab = np.cumsum(np.log1p(-self._betas()))
    return np.exp(0.5 * log_ab), np.sqrt(-np.expm1(log_ab))

  def alpha_sigma(self, t):
    """(a_t, s_t) for times t (float for vp, integer indices for ddpm)."""
    if self.discrete:
      a, s = (jnp.asarray(x, jnp.float32) for x in self.tables())
      i = jnp.asarray(t).astype(jnp.int32)
      return a[i], s[i]
    t = jnp.asarray(t, jnp.float32)
    return jnp.exp(-t / 2), jnp.sqrt(-jnp.expm1(-t))

  def net_time(self, t):
    if self.discrete:
      return jnp.asarray(t, jnp.float32) / (self.num_steps - 1)
    return (jnp.asarray(t, jnp.float32) - self.t0) / (self.t_max - self.t0)

  def from_unit(self, u):
    """Maps u in [0, 1] (small t first) to schedule time."""
    if self.discrete:
      return jnp.clip(jnp.floor(u * self.num_steps), 0, self.num_steps - 1).astype(jnp.int32)
    return self.t0 + u * (self.t_max - self.t0)

  def sample_t(self, key, shape):
    """Training times: uniform over the indices, or uniform on [t0, t_max]."""
    return self.from_unit(jax.random.uniform(key, shape))

  def grid(self, steps):
    """Decreasing sampling times, `steps` of them, from the noisiest to the cleanest.

    A discrete grid starts at the last time whose beta was not clipped: the
    cosine schedule's final beta is clipped to 0.999, which leaves a_T = 4.9e-5,
    and a first DDIM step from there to a = 0.031 multiplies the error of the
    predicted noise by 632; from the time before it, by 21.
    """
    if self.discrete:
      first = int(np.nonzero(self._betas() < BETA_MAX)[0][-1])
      return np.round(np.linspace(first, 0, steps)).astype(np.int32)
    # uniform in log(s/a) spends the steps where the signal appears
    lo, hi = (math.log(math.sqrt(math.expm1(t))) for t in (self.t0, self.t_max))
    lam = np.linspace(hi, lo, steps)
    return np.log1p(np.exp(2 * lam)).astype(np.float32)


def check_config(cfg):
  """config.diffusion: ConfigError naming the field and the fix."""
  check_choice(cfg.schedule, "diffusion.schedule", SCHEDULES)
  check_choice(cfg.weighting, "diffusion.weighting", WEIGHTINGS)
  check_int(cfg.num_steps, "diffusion.num_steps", low=2)
  if cfg.schedule == "vp" and not 0 < cfg.t0 < cfg.t_max:
    raise ConfigError(f"config.diffusion.t0={cfg.t0} and t_max={cfg.t_max} need "
                      "0 < t0 < t_max.")


def schedule_from_config(cfg):
  check_config(cfg)
  return Schedule(kind=cfg.schedule, num_steps=int(cfg.num_steps), t0=float(cfg.t0),
                  t_max=float(cfg.t_max))


def per_example_loss(eps_fn, sched, x0_BHWC, t_B, noise_BHWC, weighting="eps"):
  """Denoising loss of each example at the given times and noise.

  "eps": mean over pixels of (eps - eps_hat)^2 (DiT's objective);
  "score": the same divided by s_t^2, the paper's score-matching weight.
  """
  a, s = sched.alpha_sigma(t_B)
  x_t = a[:, None, None, None] * x0_BHWC + s[:, None, None, None] * noise_BHWC
  eps_hat = eps_fn(x_t, t_B)
  err = jnp.mean(jnp.square(eps_hat - noise_BHWC), axis=(1, 2, 3))
  return err / jnp.square(s) if weighting == "score" else err


def sample(eps_fn, sched, key, shape, *, method="ddim", steps=50, clip=None, out_sharding=None):
  """Draws samples by integrating from noise to data; one traced loop.

  eps_fn(x, t_B) -> eps_hat. `clip`: (lo, hi) for the x0 prediction, or None.
  ddim: deterministic DDIM (eta = 0), i.e. Euler on the probability-flow ODE in
  (x/a, s/a); heun: second-order Heun on that ODE; ddpm: ancestral sampling.
  """
  if method not in SAMPLERS:
    raise ConfigError(f"config.sample.method={method!r}: use one of {SAMPLERS}.")
  ts = jnp.asarray(sched.grid(steps))
  a_all, s_all = sched.alpha_sigma(ts)
  # the last step lands on clean data: a = 1, s = 0
  a_all = jnp.concatenate([a_all, jnp.ones((1,))])
  s_all = jnp.concatenate([s_all, jnp.zeros((1,))])
  k0, kloop = jax.random.split(key)
  n = shape[0]

  def x0_and_eps(x, i):
    eps = eps_fn(x, jnp.full((n,), ts[i], ts.dtype))
    x0 = (x - s_all[i] * eps) / a_all[i]
    if clip is not None:
      x0 = jnp.clip(x0, *clip)
      eps = (x - a_all[i] * x0) / s_all[i]
    return x0, eps

  def body(i, x):
    a, s, a_n, s_n = a_all[i], s_all[i], a_all[i + 1], s_all[i + 1]
    x0, eps = x0_and_eps(x, i)
    if method == "ddim":
      return a_n * x0 + s_n * eps
    if method == "ddpm":
      # posterior q(x_next | x_t, x0) of the Gaussian chain between the two times
      a_rel = a / a_n
      var_rel = s ** 2 - a_rel ** 2 * s_n ** 2
      mean = (a_rel * s_n ** 2 * x + a_n * var_rel * x0) / s ** 2
      std = jnp.sqrt(jnp.maximum(var_rel * s_n ** 2 / s ** 2, 0.0))
      z = jax.random.normal(jax.random.fold_in(kloop, i), x.shape)
      return mean + std * z
    # heun in y = x / a, sigma = s / a, where dy / dsigma = eps
    sig, sig_n = s / a, s_n / a_n
    y_euler = x / a + (sig_n - sig) * eps
    x_euler = a_n * y_euler

    def corrected():
      _, eps_n = x0_and_eps(x_euler, i + 1)
      return a_n * (x / a + (sig_n - sig) * 0.5 * (eps + eps_n))
    return jax.lax.cond(i + 1 < steps, corrected, lambda: x_euler)

  x = jax.random.normal(k0, shape, jnp.float32)
  if out_sharding is not None:  # split the batch over the devices from the start
    x = jax.lax.with_sharding_constraint(x, out_sharding)
  return jax.lax.fori_loop(0, steps, body, x)
