"""Closed-form scores and the train-time memorization gap tracker.

The empirical score (the exact minimiser of the training loss) only reproduces
training points; the ground-truth score of a known density does not minimise
the training loss (the paper's Prop. 4.1). The tracker measures, on fixed probes
and fixed noise, where the model sits between the two.

Scores are expressed as eps-predictions, eps = -s_t * score, so that every loss
here is the same quantity the model is trained on.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np

from dit_jax import data as data_lib
from dit_jax import diffusion
from dit_jax import sharding


def _chunk_size(batch, dim, budget=2 ** 24):
  """Training points per chunk so a (batch, chunk, dim) block holds ~`budget` floats."""
  return max(1, min(4096, budget // max(1, batch * dim)))


def empirical_denoiser(x_BD, a_B, s_B, train, chunk=None):
  """E[X_0 | X_t = x] under the empirical distribution of the training points.

  Softmax weights w_i ~ exp(-||x - a x_i||^2 / (2 s^2)), accumulated over chunks
  of training points with a running log-sum-exp, so memory stays bounded and
  tiny s (weights near one-hot) stays exact in float32. `train` is an (N, D)
  array, or a training split read from disk (data.DiskRows), streamed in parts
  whose partial sums merge the same way.
  """
  if hasattr(train, "shape") and len(train.shape) == 2:
    m_B, l_B, acc_BD = _softmax_moments(x_BD, a_B, s_B, jnp.asarray(train), chunk=chunk)
    return acc_BD / l_B[:, None]
  state = None
  for _, part in data_lib.chunks(train):
    new = _softmax_moments(x_BD, a_B, s_B, jnp.asarray(part.reshape(len(part), -1)),
                           chunk=chunk)
    state = new if state is None else _merge_moments(state, new)
  return state[2] / state[1][:, None]


def _merge_moments(a, b):
  """Two running log-sum-exp states (max, sum of weights, weighted sum) as one."""
  m = jnp.maximum(a[0], b[0])
  sa, sb = jnp.exp(a[0] - m), jnp.exp(b[0] - m)
  return m, a[1] * sa + b[1] * sb, a[2] * sa[:, None] + b[2] * sb[:, None]


@functools.partial(jax.jit, static_argnames=("chunk",))
def _softmax_moments(x_BD, a_B, s_B, train_ND, chunk=None):
  """(max logit, sum of weights, weighted sum of points) over the rows of train_ND."""
  n, d = train_ND.shape
  chunk = chunk or _chunk_size(x_BD.shape[0], d)
  pad = -n % chunk
  pts = jnp.concatenate([train_ND, jnp.zeros((pad, d), train_ND.dtype)])
  valid = jnp.arange(n + pad) < n
  pts, valid = pts.reshape(-1, chunk, d), valid.reshape(-1, chunk)
  inv2s2 = 0.5 / jnp.square(s_B)

  def body(carry, inputs):
    m_B, l_B, acc_BD = carry
    p_CD, ok_C = inputs
    diff = x_BD[:, None, :] - a_B[:, None, None] * p_CD[None]
    logit_BC = jnp.where(ok_C[None], -jnp.sum(diff * diff, -1) * inv2s2[:, None], -jnp.inf)
    m_new = jnp.maximum(m_B, logit_BC.max(-1))
    scale = jnp.exp(m_B - m_new)
    w_BC = jnp.exp(logit_BC - m_new[:, None])
    return (m_new, l_B * scale + w_BC.sum(-1), acc_BD * scale[:, None] + w_BC @ p_CD), None

  b = x_BD.shape[0]
  init = (jnp.full((b,), -jnp.inf), jnp.zeros((b,)), jnp.zeros((b, d)))
  return jax.lax.scan(body, init, (pts, valid))[0]


def empirical_eps(x_BD, a_B, s_B, train_ND, chunk=None):
  x0 = empirical_denoiser(x_BD, a_B, s_B, train_ND, chunk=chunk)
  return (x_BD - a_B[:, None] * x0) / s_B[:, None]


def _gmm_terms(x_BD, a_B, s_B, means_KD, cov_D, weights_K):
  """Per-component log-densities of P_t = sum_k w_k N(a mu_k, a^2 Sigma + s^2 I)."""
  var_BD = a_B[:, None] ** 2 * cov_D[None] + s_B[:, None] ** 2
  diff_BKD = x_BD[:, None, :] - a_B[:, None, None] * means_KD[None]
  logp_BK = (jnp.log(weights_K)[None]
             - 0.5 * jnp.sum(diff_BKD ** 2 / var_BD[:, None], -1)
             - 0.5 * jnp.sum(jnp.log(2 * jnp.pi * var_BD), -1)[:, None])
  return logp_BK, diff_BKD, var_BD


def gmm_log_density(x_BD, a_B, s_B, means_KD, cov_D, weights_K):
  """Exact log p_t(x) of the noised mixture (a=1, s=0 gives the data density)."""
  logp_BK, _, _ = _gmm_terms(x_BD, a_B, s_B, means_KD, cov_D, weights_K)
  return jax.nn.logsumexp(logp_BK, axis=-1)


def gmm_score(x_BD, a_B, s_B, means_KD, cov_D, weights_K):
  """grad_x log p_t(x) = -sum_k pi_k(x) (x - a mu_k) / (a^2 Sigma + s^2)."""
  logp_BK, diff_BKD, var_BD = _gmm_terms(x_BD, a_B, s_B, means_KD, cov_D, weights_K)
  post_BK = jax.nn.softmax(logp_BK, axis=-1)
  return -jnp.einsum("bk,bkd->bd", post_BK, diff_BKD) / var_BD


def gmm_eps(x_BD, a_B, s_B, means_KD, cov_D, weights_K):
  return -s_B[:, None] * gmm_score(x_BD, a_B, s_B, means_KD, cov_D, weights_K)


def gmm_params(info):
  """(means_KD, cov_D, weights_K) from a gmm dataset's info, or None."""
  g = info.get("gmm") if info else None
  if not g:
    return None
  return (jnp.asarray(g["means"], jnp.float32), jnp.asarray(g["cov_diag"], jnp.float32),
          jnp.asarray(g["weights"], jnp.float32))


def stratified_draws(sched, x0, key, buckets):
  """Each example noised once in each of `buckets` equal slices of the schedule (small
  t first): x0, t, noise and bucket index, (N * buckets, ...)."""
  n, b = len(x0), buckets
  ku, kn = jax.random.split(key)
  u = (jnp.arange(b)[None, :] + jax.random.uniform(ku, (n, b))) / b
  x0_NB = jnp.repeat(jnp.asarray(x0)[:, None], b, axis=1)
  return {"x0": x0_NB.reshape(n * b, *x0.shape[1:]),
          "t": sched.from_unit(u).reshape(-1),
          "noise": jax.random.normal(kn, (n * b, *x0.shape[1:])),
          "bucket": jnp.tile(jnp.arange(b), n)}


def bucket_mean(per, bucket, buckets):
  """Mean of per-draw values in each bucket, (buckets,)."""
  sums = jax.ops.segment_sum(per, bucket, buckets)
  return sums / jax.ops.segment_sum(jnp.ones_like(per), bucket, buckets)


# the threshold of the study's tracker_stop rule (docs/results/PLAN.md), chosen on
# exploration seeds: both readings pass it a checkpoint before mem_ratio leaves 0
STUDY_STOP_AT = 0.5


def first_crossing(rows, threshold):
  """(step, name, value, crossed) over metrics rows, read in step order: the first row
  whose stop_reading reaches `threshold` (crossed True), else the last row with the
  tracker's readings (crossed False); (None, None, None, False) if no row has them."""
  tracked = [r for r in sorted(rows, key=lambda r: r["step"]) if "memo_ema/heldout_loss" in r]
  for row in tracked:
    name, value = stop_reading(row)
    if value >= threshold:
      return row["step"], name, value, True
  if not tracked:
    return None, None, None, False
  return (tracked[-1]["step"], *stop_reading(tracked[-1]), False)


def stop_holds(record, threshold):
  """Whether a tracker stop `record` still ends its run under memo.stop_at=threshold:
  the same or a lower threshold stops there again; a higher one (or 0) trains on."""
  return bool(record) and threshold > 0 and record["reading"] >= threshold


def stop_reading(metrics):
  """(name, value): the tracker reading memo.stop_at is compared with.

  memo_ema/index where the density is known (0 at the true score, 1 at the
  empirical one); otherwise the EMA model's held-out minus training loss as a
  share of its held-out loss (0 when it fits the probes equally, growing as it
  fits its own images better than fresh ones). The readings the study's
  `tracker_stop` rule uses (docs/results/PLAN.md).
  """
  if "memo_ema/index" in metrics:
    return "memo_ema/index", float(metrics["memo_ema/index"])
  held = float(metrics["memo_ema/heldout_loss"])
  return ("memo_ema/gap / memo_ema/heldout_loss",
          float(metrics["memo_ema/gap"]) / held if held > 0 else float("nan"))


class GapTracker:
  """Fixed probes, fixed noise, B time buckets: the model's place between scores.

  For a probe of the training subset and a held-out probe (from the select
  split: the tracker may steer early stopping, so it never reads the test split), each example gets one
  noise draw and one time in each of `buckets` equal slices of the schedule
  (small t first). The empirical-optimal (and, for a known density, ground-truth)
  losses on these draws are computed once; each call only runs the model.
  """

  def __init__(self, sched, dataset, probe=32, buckets=8, weighting="eps", seed=0, mesh=None):
    self.sched, self.buckets, self.weighting = sched, buckets, weighting
    self.mesh = mesh or sharding.make_mesh()
    key = jax.random.PRNGKey(seed)
    draws = lambda x0, i: stratified_draws(sched, x0, jax.random.fold_in(key, i), buckets)
    self.train = draws(dataset.train_x[:probe], 0)
    self.held = draws(dataset.select_x[:probe], 1)
    train = dataset.train_x
    if isinstance(train, np.ndarray):
      train = jnp.asarray(train.reshape(len(train), -1))
    emp = lambda x, t: self._flat_eps(x, t, lambda xf, a, s: empirical_eps(xf, a, s, train))
    self.fixed = {"emp_loss": self._bucket_losses(emp, self.train),
                  "emp_heldout_loss": self._bucket_losses(emp, self.held)}
    gmm = gmm_params(dataset.info)
    if gmm is not None:
      gt = lambda x, t: self._flat_eps(x, t, lambda xf, a, s: gmm_eps(xf, a, s, *gmm))
      self.fixed["gt_loss"] = self._bucket_losses(gt, self.train)
      # the ground truth's loss on the held-out probe: what a model with just enough
      # capacity for the true score reaches there (the capacity search's yardstick)
      self.fixed["gt_heldout_loss"] = self._bucket_losses(gt, self.held)
      # Prop. 4.1: E[gt_loss - emp_loss] = E ||eps_emp - eps_gt||^2 on the noised
      # training set; this form is >= 0 draw by draw and has a smaller variance.
      self.fixed["loss_gap"] = self._bucket_losses(emp, self.train, target=gt)
    self._jitted = {}
    self._placed = None

  def _flat_eps(self, x, t, fn):
    a, s = self.sched.alpha_sigma(t)
    return fn(x.reshape(len(x), -1), a, s).reshape(x.shape)

  def _bucket_losses(self, eps_fn, draws, target=None):
    """Mean loss in each time bucket, (B,); against target(x, t) instead of the noise if given."""
    if target is None:
      per = diffusion.per_example_loss(eps_fn, self.sched, draws["x0"], draws["t"],
                                       draws["noise"], self.weighting)
    else:
      a, s = self.sched.alpha_sigma(draws["t"])
      x_t = a[:, None, None, None] * draws["x0"] + s[:, None, None, None] * draws["noise"]
      per = jnp.mean(jnp.square(eps_fn(x_t, draws["t"]) - target(x_t, draws["t"])), (1, 2, 3))
      per = per / jnp.square(s) if self.weighting == "score" else per
    return bucket_mean(per, draws["bucket"], self.buckets)

  def losses(self, eps_fn):
    """Bucket losses of any eps_fn(x, t) on both probes: (train_B, heldout_B)."""
    return self._bucket_losses(eps_fn, self.train), self._bucket_losses(eps_fn, self.held)

  def summarize(self, model_losses):
    """{prefix: (train_B, heldout_B)} -> the flat metric dict (overall and _t{b})."""
    out = {}
    fixed = {k: np.asarray(v) for k, v in self.fixed.items()}
    emp, emp_held = fixed["emp_loss"], fixed["emp_heldout_loss"]
    series = {"memo/emp_loss": emp, "memo/emp_heldout_loss": emp_held}
    if "gt_loss" in fixed:
      series["memo/gt_loss"] = fixed["gt_loss"]
      series["memo/gt_heldout_loss"] = fixed["gt_heldout_loss"]
      series["memo/loss_gap"] = fixed["loss_gap"]
    for prefix, (tr, he) in model_losses.items():
      tr, he = np.asarray(tr), np.asarray(he)
      series[f"{prefix}/train_loss"], series[f"{prefix}/heldout_loss"] = tr, he
      series[f"{prefix}/gap"] = he - tr
      if "gt_loss" in fixed:  # held-out loss above the true score's: lost capacity or memorization
        series[f"{prefix}/gt_excess"] = he - fixed["gt_heldout_loss"]
    for name, per_bucket in series.items():
      out[name] = float(per_bucket.mean())
      out.update({f"{name}_t{b}": float(v) for b, v in enumerate(per_bucket)})
    for prefix in model_losses:
      for s in [""] + [f"_t{b}" for b in range(self.buckets)]:
        tr, he = out[f"{prefix}/train_loss{s}"], out[f"{prefix}/heldout_loss{s}"]
        if "gt_loss" in fixed:  # 0 at the ground truth, 1 at the empirical score
          gt = out[f"memo/gt_loss{s}"]
          out[f"{prefix}/index{s}"] = (gt - tr) / max(gt - out[f"memo/emp_loss{s}"], 1e-12)
        # without a known density: the model's gap over the empirical score's gap
        emp_gap = out[f"memo/emp_heldout_loss{s}"] - out[f"memo/emp_loss{s}"]
        out[f"{prefix}/gap_index{s}"] = (he - tr) / max(emp_gap, 1e-12)
    return out

  def __call__(self, arch, make_eps, params, ema):
    """Metrics of raw (memo/) and EMA (memo_ema/) weights; one jitted call, its
    probe rows split over the mesh.

    make_eps(params) -> eps_fn(x, t); the compiled call is cached per architecture.
    """
    if arch not in self._jitted:
      def both(p, e, train, held):
        losses = lambda eps: (self._bucket_losses(eps, train), self._bucket_losses(eps, held))
        return {"memo": losses(make_eps(p)), "memo_ema": losses(make_eps(e))}
      self._jitted[arch] = jax.jit(both)
    if self._placed is None:  # placed once: the probes are fixed for the whole run
      place = lambda d: jax.tree.map(lambda a: sharding.put_global(a, self.mesh), d)
      self._placed = (place(self.train), place(self.held))
    return self.summarize(sharding.gather(self._jitted[arch](params, ema, *self._placed)))


def gmm_draws(key, n, gmm, image_shape):
  """n points drawn from the mixture itself, shaped as images: (n, H, W, C)."""
  means, cov, weights = gmm
  kc, kz = jax.random.split(key)
  comp = jax.random.categorical(kc, jnp.log(weights), shape=(n,))
  x = means[comp] + jnp.sqrt(cov)[None] * jax.random.normal(kz, (n, means.shape[1]))
  return x.reshape(n, *image_shape)


class GroundTruthProbe:
  """Fixed draws from a known density and its true score: a probe that reads no split.

  `probe` points are drawn from the mixture (not from any split), each noised once
  in each of `buckets` slices of the schedule, as the gap tracker does. For an
  eps_fn, excess(eps_fn) is the per-bucket E||eps_fn - eps_gt||^2 on these draws:
  the held-out loss's excess over the true score's on the population, which is
  what a width too small for the score raises and memorization raises too.
  """

  def __init__(self, sched, gmm, image_shape, probe=256, buckets=8, weighting="eps", seed=0):
    self.sched, self.gmm, self.buckets, self.weighting = sched, gmm, buckets, weighting
    x0 = gmm_draws(jax.random.PRNGKey(seed), probe, gmm, image_shape)
    d = stratified_draws(sched, x0, jax.random.fold_in(jax.random.PRNGKey(seed), 1), buckets)
    self.t, self.bucket = d["t"], d["bucket"]
    a, s = sched.alpha_sigma(self.t)
    self.x_t = a[:, None, None, None] * d["x0"] + s[:, None, None, None] * d["noise"]
    self.target = self.gt_eps(self.x_t, self.t)
    self.gt_loss = self._per_bucket(jnp.mean(jnp.square(self.target - d["noise"]), (1, 2, 3)))

  def gt_eps(self, x, t):
    a, s = self.sched.alpha_sigma(t)
    return gmm_eps(x.reshape(len(x), -1), a, s, *self.gmm).reshape(x.shape)

  def _per_bucket(self, per):
    if self.weighting == "score":
      per = per / jnp.square(self.sched.alpha_sigma(self.t)[1])
    return bucket_mean(per, self.bucket, self.buckets)

  def excess(self, eps_fn):
    """(B,) per-bucket mean of ||eps_fn(x_t, t) - eps_gt(x_t, t)||^2 over the probe."""
    return self._per_bucket(jnp.mean(jnp.square(eps_fn(self.x_t, self.t) - self.target),
                                     (1, 2, 3)))
