"""Baseline methods (algorithms spec §6.1–6.10): what makes each method that method.

CPU-fast: ``tiny_mlp`` / ``tiny_cnn`` (gemm convolution) on a small digits
subset (64 retain / 16 forget / 16 validation), one or two epochs. Expected
values are computed independently here (direct forwards, ``jax.grad`` of
hand-written losses, Python loops), not by the code under test.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.helpers import small_digits
from unlearn_jax.models import get_model
from unlearn_jax.training import steps
from unlearn_jax.training.state import init_variables
from unlearn_jax.unlearning import ModelState, SetSizes, _common, get_method
from unlearn_jax.unlearning import bad_teacher, fisher, l1_sparse, random_label, salun, scrub, scrub_noise


@pytest.fixture(scope="module")
def data():
  return small_digits()


@pytest.fixture(scope="module")
def mlp(data):
  model = get_model("tiny_mlp", data.num_classes)
  return model, ModelState(*init_variables(model, jax.random.key(11), data.image_shape))


@pytest.fixture(scope="module")
def cnn(data):
  model = get_model("tiny_cnn", data.num_classes, conv_impl="gemm")
  return model, ModelState(*init_variables(model, jax.random.key(12), data.image_shape))


def _ce(logits, y):
  """Mean cross-entropy, written out: −mean log softmax(logits)[y]."""
  return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], 1))


def _eval_ce(model, state, data, idx):
  x, y = data.gather(idx)
  return float(_ce(steps.apply_eval(model, state.params, state.batch_stats, x), y))


def test_neggrad_raises_forget_loss_and_uses_only_the_forget_set(data, mlp):
  model, original = mlp
  method = get_method("neggrad", model, lr=0.05, epochs=2, batch_size=8)
  out = jax.jit(method.unlearn)(original, data, jax.random.key(0)).state
  assert _eval_ce(model, out, data, data.forget) > _eval_ce(model, original, data, data.forget) + 0.05
  # With the retain set swapped for another one the run is unchanged: only D_f is read.
  other = data.replace(retain=data.validation)
  again = jax.jit(method.unlearn)(original, other, jax.random.key(0)).state
  for a, b in zip(jax.tree.leaves(out), jax.tree.leaves(again)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert method.cost(SetSizes(1000, 25, 100)) == pytest.approx(2 * 25 / 1000)


def test_neggrad_plus_step_is_beta_retain_minus_forget_with_l2_to_init_and_bn_threading(data, cnn):
  model, original = cnn
  beta, lam, lr = 0.9, 0.5, 0.1
  # One retain batch (all 64) and one forget batch (all 16) per step: both are order-free.
  method = get_method("neggrad_plus", model, beta=beta, l2_init=lam, lr=lr, momentum=0.0, weight_decay=0.0,
                      bn_train=True, epochs=2, batch_size=64, forget_batch_size=16)
  out = jax.jit(method.unlearn)(original, data, jax.random.key(0)).state
  xr, yr = data.gather(data.retain)
  xf, yf = data.gather(data.forget)

  def loss(params, stats):
    lr_, s1 = model.apply({"params": params, "batch_stats": stats}, xr, train=True, mutable=["batch_stats"])
    lf_, s2 = model.apply({"params": params, "batch_stats": s1["batch_stats"]}, xf, train=True,
                          mutable=["batch_stats"])
    l2 = sum(jnp.sum((p - q) ** 2) for p, q in zip(jax.tree.leaves(params), jax.tree.leaves(original.params)))
    return beta * (_ce(lr_, yr) + lam / 2 * l2) - (1 - beta) * _ce(lf_, yf), s2["batch_stats"]

  params, stats = original.params, original.batch_stats
  for _ in range(2):
    grads, stats = jax.grad(loss, has_aux=True)(params, stats)
    params = jax.tree.map(lambda p, g: p - lr * g, params, grads)
  for got, want in zip(jax.tree.leaves(out), jax.tree.leaves(ModelState(params, stats))):
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-4, atol=1e-6)


def test_scrub_max_step_ascends_the_forget_kl_to_the_eval_mode_teacher(data, cnn):
  model, original = cnn
  # γ = α = 0 with plain SGD: the min epoch cannot move the weights, so the result is θ₀ after
  # one max step on the whole of D_f (one batch of 16), which must match a hand-written step.
  lr, T = 0.5, 4.0
  method = get_method("scrub", model, epochs=1, msteps=1, gamma=0.0, alpha=0.0, lr=lr, momentum=0.0,
                      weight_decay=0.0, temperature=T, batch_size=64, forget_batch_size=16)
  out = jax.jit(method.unlearn)(original, data, jax.random.key(5))
  x, _ = data.gather(data.forget)
  teacher = steps.apply_eval(model, original.params, original.batch_stats, x)

  def forget_kl(params):
    student, _ = steps.apply_train(model, params, original.batch_stats, x)
    pt = jax.nn.softmax(teacher / T)
    return T * T * jnp.sum(pt * (jax.nn.log_softmax(teacher / T) - jax.nn.log_softmax(student / T))) / x.shape[0]

  grads = jax.grad(lambda p: -forget_kl(p))(original.params)
  expected = jax.tree.map(lambda p, g: p - lr * g, original.params, grads)
  for a, b in zip(jax.tree.leaves(out.state.params), jax.tree.leaves(expected)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-7)
  assert float(forget_kl(out.state.params)) > 1.1 * float(forget_kl(original.params)) > 0
  np.testing.assert_allclose(float(out.metrics["max_loss"][0]), -float(forget_kl(original.params)), rtol=1e-4)


def test_scrub_lr_schedule_follows_epochs_across_max_and_min_steps():
  hp = scrub.resolve("MIA", {})
  assert scrub.epoch_lrs(hp) == pytest.approx([5e-4, 5e-4, 5e-4, 5e-5, 5e-5])
  starts = scrub.epoch_starts(hp, n_retain=64, n_forget=20)  # 2 retain + 2 forget steps per max epoch
  assert starts == [0, 4, 8, 12, 14]
  lr = _common.epoch_table_lr(scrub.epoch_lrs(hp), starts)
  got = [float(lr(jnp.asarray(c))) for c in (0, 11, 12, 13, 14, 30)]
  assert got == pytest.approx([5e-4, 5e-4, 5e-5, 5e-5, 5e-5, 5e-5])


def test_scrub_rewind_returns_the_snapshot_closest_to_the_forget_validation_error(data, mlp):
  model, original = mlp
  kw = dict(msteps=1, lr=0.2, batch_size=16, forget_batch_size=8)
  rewound = jax.jit(get_method("scrub", model, rewind=True, epochs=3, **kw).unlearn)(
      original, data, jax.random.key(2))
  errors = np.asarray(rewound.metrics["forget_error"])
  final = jax.jit(get_method("scrub", model, epochs=3, **kw).unlearn)(original, data, jax.random.key(2)).state
  # Target: the final student's error on validation examples of classes present in D_f.
  present = set(np.asarray(data.labels[data.forget]).tolist())
  x, y = data.gather(data.validation)
  pred = np.asarray(steps.apply_eval(model, final.params, final.batch_stats, x).argmax(-1))
  keep = np.array([c in present for c in np.asarray(y)])
  target = float(np.mean(pred[keep] != np.asarray(y)[keep]))
  assert float(rewound.metrics["target_error"]) == pytest.approx(target)
  chosen = int(np.argmin(np.abs(errors - target)))
  assert int(rewound.metrics["rewind_epoch"]) == chosen
  # The returned model is the end-of-epoch snapshot: a run of chosen+1 epochs gives it.
  short = jax.jit(get_method("scrub", model, epochs=chosen + 1, **kw).unlearn)(original, data, jax.random.key(2))
  for a, b in zip(jax.tree.leaves(rewound.state), jax.tree.leaves(short.state)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


def test_scrub_noise_gates_pick_k_non_bn_tensors_per_key(cnn):
  _, original = cnn
  names = _common.leaf_names(original.params)
  picks = []
  for seed in range(6):
    gates = jax.tree.leaves(scrub_noise.noise_gates(original.params, "random_k", 2, jax.random.key(seed)))
    chosen = {n for n, g in zip(names, gates) if float(g) == 1.0}
    assert len(chosen) == 2 and not any("bn" in n for n in chosen)
    picks.append(frozenset(chosen))
  assert len(set(picks)) > 1
  stem = jax.tree.leaves(scrub_noise.noise_gates(original.params, "stem", 0, jax.random.key(0)))
  assert [n for n, g in zip(names, stem) if float(g)] == ["conv1/kernel"]


def test_scrub_noise_noises_only_the_chosen_leaves_and_keeps_the_teacher_clean(data, cnn):
  model, original = cnn
  # lr 0: the student stays at its noised start, so the output shows the noise itself, and the
  # max-epoch loss is −DistillKL(un-noised teacher, noised student) over D_f (one batch of 16).
  method = get_method("scrub_noise", model, noise_scope="random_k", k=2, sigma=0.3, lr=0.0, epochs=1,
                      msteps=1, batch_size=64, forget_batch_size=16, momentum=0.0, weight_decay=0.0)
  key = jax.random.key(4)
  out = jax.jit(method.unlearn)(original, data, key)
  names = _common.leaf_names(original.params)
  moved = [n for n, a, b in zip(names, jax.tree.leaves(out.state.params), jax.tree.leaves(original.params))
           if float(jnp.max(jnp.abs(a - b))) > 0]
  assert len(moved) == 2 and not any("bn" in n for n in moved)
  x, _ = data.gather(data.forget)
  teacher = steps.apply_eval(model, original.params, original.batch_stats, x)
  student, _ = steps.apply_train(model, out.state.params, original.batch_stats, x)
  T = method.hyperparameters["temperature"]
  pt = jax.nn.softmax(teacher / T)
  kl = jnp.sum(pt * (jax.nn.log_softmax(teacher / T) - jax.nn.log_softmax(student / T))) / x.shape[0] * T * T
  assert float(kl) > 1e-3
  np.testing.assert_allclose(float(out.metrics["max_loss"][0]), -float(kl), rtol=1e-4)


def test_random_label_draws_differ_per_seed_and_exclude_the_true_label(data):
  y = data.labels[data.train]
  others = [np.asarray(random_label.random_labels(jax.random.key(s), y, 10, "others")) for s in range(2)]
  assert not np.any(others[0] == np.asarray(y)) and not np.any(others[1] == np.asarray(y))
  assert np.mean(others[0] != others[1]) > 0.5
  assert len(np.unique(others[0])) == 10
  every = np.asarray(random_label.random_labels(jax.random.key(0), y, 10, "all"))
  assert 0.0 < np.mean(every == np.asarray(y)) < 0.3 and len(np.unique(every)) == 10


def test_random_label_forget_pass_trains_on_random_labels_per_seed(data, mlp):
  model, original = mlp
  # lr 0 keeps θ₀, so the forget-pass loss is the CE of θ₀ against the labels the method drew.
  method = get_method("random_label", model, lr=1e-30, momentum=0.0, weight_decay=0.0, epochs=1, batch_size=16)
  run = jax.jit(method.unlearn)
  losses = [float(run(original, data, jax.random.key(s)).metrics["forget_loss"][0]) for s in range(3)]
  true_ce = _eval_ce(model, original, data, data.forget)
  assert len({round(v, 6) for v in losses}) == 3
  assert all(abs(v - true_ce) > 1e-4 for v in losses)


def test_bad_teacher_target_mixes_teachers_by_flag_with_mean_reduction():
  bad = jnp.array([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
  good = jnp.array([[0.0, 0.0, 3.0], [1.0, 0.0, 0.0]])
  q = bad_teacher.mixed_target(bad, good, jnp.array([True, False]), 1.0)
  np.testing.assert_allclose(np.asarray(q[0]), np.asarray(jax.nn.softmax(bad[0])), rtol=1e-6)
  np.testing.assert_allclose(np.asarray(q[1]), np.asarray(jax.nn.softmax(good[1])), rtol=1e-6)
  student = jnp.array([[0.5, 0.1, -0.2], [0.0, 0.3, 0.9]])
  logp = np.log(np.asarray(jax.nn.softmax(student)))
  qn = np.asarray(q)
  expected_sum = float(np.sum(qn * (np.log(qn) - logp)))
  assert float(bad_teacher.kl_to_target(q, student, 1.0, "mean")) == pytest.approx(expected_sum / 6, rel=1e-5)
  assert float(bad_teacher.kl_to_target(q, student, 1.0, "batchmean")) == pytest.approx(expected_sum / 2, rel=1e-5)


def test_bad_teacher_loss_uses_a_per_seed_random_teacher_on_forget_and_the_original_on_retain(data, cnn):
  model, original = cnn
  # lr 0 and one batch holding the whole union: the epoch loss is the KL at θ₀ in train mode.
  method = get_method("bad_teacher", model, lr=1e-30, batch_size=256, epochs=1)
  key = jax.random.key(9)
  got = float(jax.jit(method.unlearn)(original, data, key).metrics["loss"][0])
  bad_p, bad_s = init_variables(model, jax.random.fold_in(key, bad_teacher.TEACHER_STREAM), data.image_shape)
  n_r = data.retain.shape[0]
  sub = data.retain[jax.random.permutation(jax.random.fold_in(key, bad_teacher.SUBSET_STREAM), n_r)[:19]]
  x_f, _ = data.gather(data.forget)
  x_r, _ = data.gather(sub)
  x = jnp.concatenate([x_f, x_r])
  target = jnp.concatenate([jax.nn.softmax(steps.apply_eval(model, bad_p, bad_s, x_f)),
                            jax.nn.softmax(steps.apply_eval(model, original.params, original.batch_stats, x_r))])
  student, _ = steps.apply_train(model, original.params, original.batch_stats, x)
  expected = jnp.sum(target * (jnp.log(target) - jax.nn.log_softmax(student))) / target.size
  assert got == pytest.approx(float(expected), rel=1e-4)
  other = float(jax.jit(method.unlearn)(original, data, jax.random.key(10)).metrics["loss"][0])
  assert other != pytest.approx(got, rel=1e-3)


def test_l1_sparse_penalty_follows_the_linear_decay_schedule(data, mlp):
  model, original = mlp
  kw = dict(lr=1e-30, epochs=4, no_l1_epochs=1, batch_size=16)
  with_l1 = jax.jit(get_method("l1_sparse", model, gamma=1e-3, **kw).unlearn)(original, data, jax.random.key(0))
  no_l1 = jax.jit(get_method("l1_sparse", model, gamma=0.0, **kw).unlearn)(original, data, jax.random.key(0))
  norm = float(sum(jnp.abs(p).sum() for p in jax.tree.leaves(original.params)))
  # γ_t = γ(1 − t/(E − E₀)) for t < E − E₀ = 3, then 0.
  expected = [1e-3 * f * norm for f in (1.0, 2 / 3, 1 / 3, 0.0)]
  diff = np.asarray(with_l1.metrics["loss"]) - np.asarray(no_l1.metrics["loss"])
  np.testing.assert_allclose(diff, expected, rtol=1e-3, atol=1e-5)
  assert l1_sparse.gamma_schedule(1.0, 3, 3) == [1.0, 1.0, 1.0]


def test_salun_mask_is_global_top_rho_and_masked_weights_stay_exactly_at_theta0(data, cnn):
  model, original = cnn
  rho = 0.3
  method = get_method("salun", model, rho=rho, lr=0.05, epochs=1, batch_size=16, mask_batch_size=16)
  out = jax.jit(method.unlearn)(original, data, jax.random.key(1)).state
  # Independent mask: |∇ mean CE over all 16 forget examples| at θ₀ in eval mode, global top fraction.
  x, y = data.gather(data.forget)
  g = jax.grad(lambda p: _ce(steps.apply_eval(model, p, original.batch_stats, x), y))(original.params)
  flat = np.concatenate([np.abs(np.asarray(v)).ravel() for v in jax.tree.leaves(g)])
  k = int(flat.size * rho)
  threshold = np.sort(flat)[::-1][k - 1]
  mask = jax.jit(lambda o: salun.saliency_mask(salun.forget_gradient(model, o, data, 16), rho))(original)
  m_flat = np.concatenate([np.asarray(v).ravel() for v in jax.tree.leaves(mask)])
  assert m_flat.sum() == k
  np.testing.assert_array_equal(m_flat == 1, flat >= threshold)
  moved = np.concatenate([(np.asarray(a) != np.asarray(b)).ravel()
                          for a, b in zip(jax.tree.leaves(out.params), jax.tree.leaves(original.params))])
  assert not np.any(moved[m_flat == 0]), "a masked weight moved"
  assert moved[m_flat == 1].mean() > 0.9


def _naive_fisher(model, state, data, indices):
  """(1/N) Σ_x Σ_y p(y|x) (∂CE(x, y)/∂θ)², one example and one label at a time."""
  total = jax.tree.map(jnp.zeros_like, state.params)
  grad_fn = jax.jit(jax.grad(lambda p, x, y: _ce(steps.apply_eval(model, p, state.batch_stats, x), y)))
  for i in np.asarray(indices):
    x, _ = data.gather(jnp.asarray([i]))
    p = jax.nn.softmax(steps.apply_eval(model, state.params, state.batch_stats, x))[0]
    for y in range(data.num_classes):
      g = grad_fn(state.params, x, jnp.asarray([y]))
      total = jax.tree.map(lambda t, gi: t + p[y] * gi ** 2, total, g)
  return jax.tree.map(lambda t: t / len(indices), total)


def test_fisher_matches_per_example_computation_and_noise_scales_with_inverse_fisher(data, mlp):
  model, original = mlp
  idx = data.retain[np.arange(10) * 64 // 10]  # the evenly spaced subsample the method uses
  naive = _naive_fisher(model, original, data, idx)
  fast = jax.jit(lambda o: fisher.fisher_diagonal(model, o, data, idx, fisher_batch=1, chunk=4))(original)
  for a, b in zip(jax.tree.leaves(fast), jax.tree.leaves(naive)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-3, atol=1e-9)

  # Variance from the naive Fisher, written out: α·min(1/(F+1e-8), cap), mean over the torch
  # input axis (Dense axis 0), ×10 for the classifier (10 outputs) and every 1-D tensor.
  alpha = 1e-4
  expected = {}
  for name, f in zip(_common.leaf_names(naive), jax.tree.leaves(naive)):
    f = np.asarray(f, np.float64)
    head = f.shape[-1] == 10
    v = alpha * np.minimum(1 / (f + 1e-8), 1e2 if head else 1e3)
    if v.ndim == 2:
      v = np.broadcast_to(v.mean(0, keepdims=True), v.shape)
    expected[name] = v * (10 if head or v.ndim == 1 else 1)

  method = get_method("fisher", model, alpha=alpha, subsample=10, chunk=4)
  run = jax.jit(jax.vmap(method.unlearn, in_axes=(None, None, 0)))
  outs = run(original, data, jax.random.split(jax.random.key(0), 16))
  z = []
  for name, new, old in zip(_common.leaf_names(original.params), jax.tree.leaves(outs.state.params),
                            jax.tree.leaves(original.params)):
    z.append(((np.asarray(new, np.float64) - np.asarray(old)) / np.sqrt(expected[name])).ravel())
  z = np.concatenate(z)
  assert abs(z.mean()) < 0.02 and abs(z.std() - 1.0) < 0.03


def test_fisher_batched_option_weights_batch_mean_gradients_by_mean_probability(data, mlp):
  model, original = mlp
  idx = np.asarray(data.retain[:10])
  batches = [idx[0:4], idx[4:8], idx[8:10]]  # fisher_batch 4: the last batch is short
  grad_fn = jax.jit(jax.grad(lambda p, x, y: _ce(steps.apply_eval(model, p, original.batch_stats, x), y)))
  total = jax.tree.map(jnp.zeros_like, original.params)
  for b in batches:
    x, _ = data.gather(jnp.asarray(b))
    p_mean = jax.nn.softmax(steps.apply_eval(model, original.params, original.batch_stats, x)).mean(0)
    for y in range(10):
      g = grad_fn(original.params, x, jnp.full((len(b),), y, jnp.int32))
      total = jax.tree.map(lambda t, gi: t + p_mean[y] * gi ** 2, total, g)
  expected = jax.tree.map(lambda t: t / len(batches), total)
  got = jax.jit(lambda o: fisher.fisher_diagonal(model, o, data, jnp.asarray(idx), fisher_batch=4, chunk=2))(
      original)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(expected)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-3, atol=1e-9)


def test_random_label_bad_teacher_variant_trains_the_union_on_fixed_other_class_labels(data, mlp):
  model, original = mlp
  # lr 0 and one batch holding D_f ∪ D_r: the loss is the CE of θ₀ on the union with the forget
  # labels replaced once, by labels that are never the true one.
  method = get_method("random_label", model, variant="bad-teacher-repo", lr=0.0, epochs=2, batch_size=128)
  assert method.hyperparameters["optimizer"] == "adam" and method.hyperparameters["relabel"] == "others"
  got = np.asarray(jax.jit(method.unlearn)(original, data, jax.random.key(3)).metrics["loss"])
  x_f, y_f = data.gather(data.forget)
  x_r, y_r = data.gather(data.retain)
  logits_f = steps.apply_eval(model, original.params, original.batch_stats, x_f)
  logits_r = steps.apply_eval(model, original.params, original.batch_stats, x_r)
  ce_r = -np.asarray(jnp.take_along_axis(jax.nn.log_softmax(logits_r), y_r[:, None], 1)).sum()
  logp_f = np.asarray(jax.nn.log_softmax(logits_f))
  wrong = [np.delete(logp_f[i], int(y_f[i])) for i in range(len(y_f))]
  # Each forget term is the CE against one of the other classes: between their min and max.
  lo = (ce_r - sum(w.max() for w in wrong)) / 80
  hi = (ce_r - sum(w.min() for w in wrong)) / 80
  assert got[0] == pytest.approx(got[1], rel=1e-6)  # labels drawn once: both epochs see the same ones
  assert lo - 1e-6 <= got[0] <= hi + 1e-6
  true_loss = (ce_r - sum(logp_f[i, int(y_f[i])] for i in range(len(y_f)))) / 80
  assert abs(got[0] - true_loss) > 1e-4


def test_scrub_noise_relative_scale_and_reinjection_before_the_last_epoch(data, cnn):
  model, original = cnn
  gates = scrub_noise.noise_gates(original.params, "non_bn", 0, jax.random.key(0))
  noised = scrub_noise.add_noise(original.params, gates, 0.5, True, jax.random.key(1))
  kernel, new = np.asarray(original.params["head"]["kernel"]), np.asarray(noised["head"]["kernel"])
  assert np.std(new - kernel) == pytest.approx(0.5 * np.std(kernel), rel=0.15)
  np.testing.assert_array_equal(np.asarray(noised["bn1"]["scale"]), np.asarray(original.params["bn1"]["scale"]))
  # lr 0: the output is the start plus the second draw, which lands on the same set S (the stem)
  # only when reinject_sigma > 0.
  kw = dict(noise_scope="stem", sigma=0.2, lr=0.0, epochs=2, msteps=0, batch_size=64, forget_batch_size=16)
  key = jax.random.key(8)
  once = jax.jit(get_method("scrub_noise", model, **kw).unlearn)(original, data, key).state.params
  twice = jax.jit(get_method("scrub_noise", model, reinject_sigma=0.05, **kw).unlearn)(original, data, key).state.params
  for name, a, b in zip(_common.leaf_names(once), jax.tree.leaves(once), jax.tree.leaves(twice)):
    extra = np.asarray(b) - np.asarray(a)
    if name == "conv1/kernel":
      assert np.std(extra) == pytest.approx(0.05, rel=0.3)
    else:
      assert not np.any(extra), name


def test_finetune_scrub_repo_preset_uses_eval_mode_bn_and_l2_to_init(data, cnn):
  model, original = cnn
  hp = get_method("finetune", model, preset="scrub-repo").hyperparameters
  assert (hp["lr"], hp["momentum"], hp["weight_decay"], hp["l2_init"], hp["bn_train"], hp["epochs"]) == (
      0.01, 0.0, 0.0, 0.1, False, 10)
  # A large λ and rate so that the L2-to-init pull is visible in the second step.
  method = get_method("finetune", model, preset="scrub-repo", epochs=2, batch_size=64, lr=0.5, l2_init=5.0)
  out = jax.jit(method.unlearn)(original, data, jax.random.key(0)).state
  x, y = data.gather(data.retain)  # one full batch per epoch: order-free

  def loss(params):
    l2 = sum(jnp.sum((p - q) ** 2) for p, q in zip(jax.tree.leaves(params), jax.tree.leaves(original.params)))
    return _ce(steps.apply_eval(model, params, original.batch_stats, x), y) + 5.0 / 2 * l2

  params = original.params
  for _ in range(2):
    params = jax.tree.map(lambda p, g: p - 0.5 * g, params, jax.grad(loss)(params))
  for a, b in zip(jax.tree.leaves(out.params), jax.tree.leaves(params)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-7)
  for a, b in zip(jax.tree.leaves(out.batch_stats), jax.tree.leaves(original.batch_stats)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_scrub_shares_one_optimizer_state_between_max_and_min_steps_by_default(data, mlp):
  model, original = mlp
  kw = dict(epochs=2, msteps=2, lr=0.05, batch_size=32, forget_batch_size=16, weight_decay=0.0)
  key = jax.random.key(6)
  run = lambda **extra: jax.jit(get_method("scrub", model, **kw, **extra).unlearn)(original, data, key).state
  # Without momentum the optimiser carries nothing across steps: sharing it or not is the same run.
  same_a, same_b = run(momentum=0.0), run(momentum=0.0, separate_optimizers=True)
  for a, b in zip(jax.tree.leaves(same_a), jax.tree.leaves(same_b)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-7)
  # With momentum the shared buffer carries min-step velocity into the max steps and back.
  shared, separate = run(momentum=0.9), run(momentum=0.9, separate_optimizers=True)
  assert max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(jax.tree.leaves(shared), jax.tree.leaves(separate))) > 1e-4
