"""The diagnostic: the optimum by its optimality condition, σ² and δ² by hand and by a
dense per-sample computation, Lemma 1's certificate of problem (3), bad input."""

import warnings

import numpy as np
import pytest

from byzsim.config import TheoryWarning, make_config
from byzsim.diagnose import (
    _SoftmaxObjective,
    _minimise,
    bound_at_end,
    config_bound,
    diagnose,
    distance_to_optimum,
    main,
    optimum_key,
    penalised_objective,
    penalised_optimum,
)
from byzsim.models import make_model
from byzsim.simulate import problem_for

SYN = dict(dataset="synthetic", dataset_params=dict(n_samples=240, n_test=60, n_features=5, n_classes=3),
           n_clients=6, n_byzantine=1, byzantine_indices=[5], partition="iid", seed=0)


def cfg_of(**kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TheoryWarning)
        return make_config(**{**SYN, **kw})


# --------------------------------------------------------------------------------------
# hand-checkable pieces
# --------------------------------------------------------------------------------------
def two_clients():
    """C = 2 classes, one feature, no bias.  At w = 0 the softmax is (½, ½), so sample
    (x, y) has gradient ``x·(½ − [y=0], ½ − [y=1])``:
    client 1: (1, 0), (3, 0) → (−½, ½), (−3/2, 3/2): mean (−1, 1), σ_1² = (½ + ½)/2 = ½;
    client 2: (2, 1), (2, 1) → (1, −1) twice: mean (1, −1), σ_2² = 0.
    σ² = ¼; the mean gradient is 0, so δ² = (2 + 2)/2 = 2."""
    model = make_model("softmax", 1, 2, bias=False)
    X = np.array([[[1.0], [3.0]], [[2.0], [2.0]]])
    y = np.array([[0, 0], [1, 1]])
    return model, X, y


def test_client_stats_by_hand():
    model, X, y = two_clients()
    obj = _SoftmaxObjective(model, X, y, c=1.0, kappa=0.0)
    G, s2 = obj.client_stats(np.zeros(2))
    np.testing.assert_allclose(G, [[-1.0, 1.0], [1.0, -1.0]])
    np.testing.assert_allclose(s2, [0.5, 0.0], atol=1e-15)
    delta2 = np.mean(np.sum((G - G.mean(0)) ** 2, axis=1))
    assert delta2 == pytest.approx(2.0)


def test_objective_matches_the_model():
    """F = Σ_i f_i + κ/2‖w‖² and its gradient equal the model's own loss/grad summed
    over clients (an independent path: models.py's residual and factor code)."""
    cfg = cfg_of(method="rsa", server_l2=0.1, model_params=dict(l2=0.02))
    pr = problem_for(cfg)
    reg = pr.regular
    R = int(reg.sum())
    obj = _SoftmaxObjective(pr.model, pr.X[reg], pr.y[reg], c=1.0, kappa=R * 0.02 + 0.1)
    w = np.random.default_rng(1).standard_normal(pr.model.dim) * 0.3
    f, g = obj.value_grad(w)
    f_ref = pr.model.loss(w, pr.X[reg], pr.y[reg]).sum() + 0.05 * w @ w
    g_ref = pr.model.grad(w, pr.X[reg], pr.y[reg]).sum(0) + 0.1 * w
    assert f == pytest.approx(f_ref, rel=1e-12)
    np.testing.assert_allclose(g, g_ref, rtol=1e-10, atol=1e-12)
    # Hessian-vector product against a central difference of the gradient
    v = np.random.default_rng(2).standard_normal(w.size)
    eps = 1e-6
    fd = (obj.value_grad(w + eps * v)[1] - obj.value_grad(w - eps * v)[1]) / (2 * eps)
    np.testing.assert_allclose(obj.hessp_at(w)(v), fd, rtol=1e-5, atol=1e-7)


def test_sparse_and_dense_products_agree():
    """The CSR path (sparse features) gives the dense path's value, gradient, Hessian
    product and variations."""
    rng = np.random.default_rng(3)
    model = make_model("softmax", 60, 4, bias=True)
    X = model.prepare(rng.random((2, 1000, 60)) * (rng.random((2, 1000, 60)) < 0.2))
    y = rng.integers(4, size=(2, 1000))
    sp_obj = _SoftmaxObjective(model, X, y, c=0.5, kappa=0.1)
    de_obj = _SoftmaxObjective(model, X, y, c=0.5, kappa=0.1, sparse=False)
    assert sp_obj._Xs is not None and de_obj._Xs is None  # auto picked CSR here
    w, v = rng.standard_normal((2, model.dim))
    for a, b in zip(sp_obj.value_grad(w), de_obj.value_grad(w)):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(sp_obj.hessp_at(w)(v), de_obj.hessp_at(w)(v), rtol=1e-12, atol=1e-13)
    for a, b in zip(sp_obj.client_stats(w), de_obj.client_stats(w)):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-13)
    gram = (X.reshape(-1, 61).T @ X.reshape(-1, 61)) / 2000
    assert sp_obj.smoothness_bounds()[1] == pytest.approx(0.5 * np.linalg.eigvalsh(gram)[-1], rel=1e-6)


def test_symmetric_data_has_optimum_zero():
    """Each client holds x and −x in each class: the gradient vanishes at 0, which is
    therefore the (unique, κ > 0) optimum."""
    model = make_model("softmax", 1, 2, bias=False)
    X = np.array([[[1.0], [-1.0], [2.0], [-2.0]]] * 2)
    y = np.array([[0, 0, 1, 1]] * 2)
    opt = _minimise(_SoftmaxObjective(model, X, y, c=1.0, kappa=0.5), tol=1e-10)
    np.testing.assert_allclose(opt.x, 0.0, atol=1e-10)
    assert opt.grad_norm <= 1e-10 and opt.dist_bound <= 2e-10


# --------------------------------------------------------------------------------------
# the diagnosis end to end
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("family_method", ["rsa", "byrd-saga"])
def test_diagnose_optimum_and_variations(family_method):
    cfg = cfg_of(method=family_method, server_l2=0.05, model_params=dict(l2=0.01), batch_size=4)
    d = diagnose(cfg)
    pr = problem_for(cfg)
    reg, model, x = pr.regular, pr.model, d.optimum.x
    R = int(reg.sum())
    # optimality condition of the family's problem, from the model's own gradient
    grads = model.grad(x, pr.X[reg], pr.y[reg])  # (R, d), with the model's l2
    scale = 1.0 if cfg.family == "penalty" else 1.0 / R
    gF = scale * grads.sum(0) + 0.05 * x
    assert np.linalg.norm(gF) <= d.optimum.tol * (1 + 1e-6)
    assert d.optimum.grad_norm == pytest.approx(np.linalg.norm(gF), rel=1e-6, abs=1e-12)
    # σ², δ² against dense per-sample gradients
    psg = model.per_sample_grads(x, pr.X[reg], pr.y[reg])  # (R, J, d), data term only
    local = psg.mean(1)
    s2 = np.mean(np.sum((psg - local[:, None]) ** 2, axis=2), axis=1)
    assert d.sigma2 == pytest.approx(s2.mean(), rel=1e-9)
    assert d.sigma2_max == pytest.approx(s2.max(), rel=1e-9)
    J = pr.J
    assert d.sigma2_batch == pytest.approx(s2.mean() * (J - 4) / (4 * (J - 1)), rel=1e-9)
    assert d.delta2 == pytest.approx(np.mean(np.sum((local - local.mean(0)) ** 2, 1)), rel=1e-9)
    # μ is the l2 coefficient; the local curvature lies between μ and the global bound
    kappa = (R * 0.01 + 0.05) if cfg.family == "penalty" else 0.06
    assert d.mu == pytest.approx(kappa)
    assert d.mu <= d.L_local <= d.L_bound * (1 + 1e-6)
    assert 0 <= d.test_accuracy <= 1 and d.train_loss > 0
    text = d.format()
    assert "σ²" in text and "δ²" in text
    if cfg.family == "penalty":
        thr = max(np.abs(g).max() for g in grads)
        assert d.lemma1_threshold == pytest.approx(thr, rel=1e-9)
        # the threshold's certified error: L_i‖x − x̃*‖ with L_i ≤ ½‖x_j‖²-bound + l2
        assert 0 < d.lemma1_error <= (0.5 * np.max(np.sum(pr.X[reg] ** 2, -1)) + 0.01) * d.optimum.dist_bound
        assert "Lemma 1" in text and d.paper_b is None
    else:
        assert set(d.paper_b) == {"Byrd-SGD", "RS-Byrd-SGD", "Byrd-SAGA", "RS-Byrd-SAGA"}
        assert d.config_bound is not None and d.config_bound.name == "Byrd-SAGA"
        assert d.config_bound.formula == pytest.approx(5 * (2 - 2 / 6) ** 2 / (1 - 2 / 6) ** 2
                                                       * d.delta2 / d.mu**2, rel=1e-12)


def test_bound_at_end_and_config_bound():
    cfg = cfg_of(method="byrd-sgd", model_params=dict(l2=0.05), batch_size=2, lr=1e-6)
    d = diagnose(cfg)
    out = bound_at_end(d.optimum.x + 0.5, d)
    assert out["distance2"] == pytest.approx(0.25 * d.d)
    assert out["bound_name"] == "Byrd-SGD"
    # a tiny step meets Theorem 3's step condition μ/(2L²): the bound is a guarantee
    assert out["bound"] is not None and out["bound"] == out["bound_formula"]
    rs = config_bound(cfg.replace(method="rs-byrd-saga", batch_size=2), d)
    assert rs.name == "RS-Byrd-SAGA s=2"
    with pytest.raises(ValueError, match="batch_size"):
        config_bound(cfg.replace(batch_size=3), d)
    assert config_bound(cfg.replace(method="krum", batch_size=2), d) is None
    assert distance_to_optimum(np.ones(3), np.zeros(3)) == 3.0
    with pytest.raises(ValueError, match="shape"):
        distance_to_optimum(np.ones(3), np.zeros(4))


def test_outside_range_warns_and_reports_none():
    """Step far above Theorem 3's condition: a TheoryWarning, no bound, formula kept."""
    cfg = cfg_of(method="byrd-sgd", model_params=dict(l2=0.05), lr=0.5)
    with pytest.warns(TheoryWarning, match="step"):
        d = diagnose(cfg)
    assert d.config_bound.value is None and d.config_bound.formula > 0


# --------------------------------------------------------------------------------------
# paper A, problem (3) and Lemma 1
# --------------------------------------------------------------------------------------
def test_penalised_optimum_certified_above_threshold():
    cfg = cfg_of(method="rsa", server_l2=0.1, penalty=5.0, model_params=dict(l2=0.01))
    opt = penalised_optimum(cfg)
    assert opt.ratio <= 1
    pr = problem_for(cfg)
    F = lambda x0, X: penalised_objective(pr, x0, X, cfg.penalty, cfg.p, cfg.server_l2)
    assert opt.objective == pytest.approx(F(opt.x0, opt.X))
    rng = np.random.default_rng(0)
    for scale in (1e-1, 1e-2, 1e-3):  # every perturbation (of x0 or of the x_i) costs
        assert F(opt.x0 + scale * rng.standard_normal(opt.x0.size), opt.X) > opt.objective
        assert F(opt.x0, opt.X + scale * rng.standard_normal(opt.X.shape)) > opt.objective


def test_penalised_optimum_below_threshold_is_solved_for_p1():
    """λ at half the threshold: the optimum of (3) is not the consensus; the split
    solution beats it, meets its KKT conditions, and every perturbation costs."""
    cfg = cfg_of(method="rsa", server_l2=0.1, penalty=1.0, model_params=dict(l2=0.01),
                 dataset_params=dict(n_samples=60, n_test=20, n_features=2, n_classes=3))
    above = penalised_optimum(cfg.replace(penalty=100.0))
    cfg = cfg.replace(penalty=50.0 * above.ratio)  # λ = threshold / 2 (threshold = ratio · 100)
    opt = penalised_optimum(cfg)
    assert opt.method == "split" and opt.ratio == pytest.approx(2.0) and opt.residual <= opt.tol
    pr = problem_for(cfg)
    F = lambda x0, X: penalised_objective(pr, x0, X, cfg.penalty, cfg.p, cfg.server_l2)
    assert F(opt.x0, opt.X) == pytest.approx(opt.objective, rel=1e-10)
    consensus = F(above.x0, np.broadcast_to(above.x0, opt.X.shape))
    assert opt.objective < consensus - 1e-6
    rng = np.random.default_rng(0)
    for scale in (1e-2, 1e-3):
        assert F(opt.x0 + scale * rng.standard_normal(opt.x0.size), opt.X) > opt.objective
        assert F(opt.x0, opt.X + scale * rng.standard_normal(opt.X.shape)) > opt.objective


def test_penalised_optimum_bad_input():
    cfg = cfg_of(method="rsa", server_l2=0.1, penalty=1e-4, model_params=dict(l2=0.01), p=2.0)
    with pytest.raises(ValueError, match="below Lemma 1's threshold.*only for p = 1"):
        penalised_optimum(cfg)
    with pytest.raises(ValueError, match="penalty family"):
        penalised_optimum(cfg_of(method="byrd-saga", model_params=dict(l2=0.01)))


def test_penalised_objective_by_hand():
    model, X, y = two_clients()
    from byzsim.algorithms import Problem

    pr = Problem(model=model, X=X, y=y, byzantine=np.array([False, False]),
                 X_test=X[0], y_test=y[0])
    x0, Xm = np.zeros(2), np.array([[0.0, 0.0], [1.0, -1.0]])
    # f_i(0) = log 2 each; f_2 at (1, −1): logits ±x → nll of class 1 = log(1 + e^{2x}) = log(1 + e^4)
    expected = np.log(2) + np.log1p(np.exp(4.0)) + 0.5 * 0.0 + 0.3 * 2.0  # λ‖(1, −1)‖_1 = 0.3·2
    assert penalised_objective(pr, x0, Xm, 0.3, 1.0, 0.0) == pytest.approx(expected, rel=1e-12)


# --------------------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------------------
def test_optimum_key_shares_exactly_what_x_star_depends_on():
    base = cfg_of(method="byrd-saga", batch_size=4)
    key = optimum_key(base, 0.1)
    same = [base.replace(method="byrd-sgd"), base.replace(attack="sign_flipping"), base.replace(lr=0.01),
            base.replace(batch_size=8), base.replace(dtype="float32")]  # the float64 problem is hashed
    assert all(optimum_key(c, 0.1) == key for c in same)
    other = [(base, 0.2), (base.replace(server_l2=0.1), 0.1), (base.replace(seed=1), 0.1),
             (cfg_of(method="rsa", batch_size=4), 0.1), (base.replace(byzantine_indices=[4]), 0.1)]
    assert len({key} | {optimum_key(c, r) for c, r in other}) == 1 + len(other)
    # one worker per class: the seeds only reorder each worker's rows, so x* is shared
    by_class = dict(partition="by_class", partition_params=dict(truncate=False), n_clients=3,
                    byzantine_indices=[0], method="byrd-sgd")
    c0, c1 = cfg_of(**by_class), cfg_of(**by_class, seed=1)
    assert optimum_key(c0, 0.1) == optimum_key(c1, 0.1)
    d0 = diagnose(c0, ridge=0.1)
    assert diagnose(c1, ridge=0.1, optimum=d0.optimum).delta2 == pytest.approx(d0.delta2, rel=1e-9)
    # two workers per class: each seed deals a class's rows to them anew
    assert optimum_key(c0.replace(n_clients=6), 0.1) != optimum_key(c1.replace(n_clients=6), 0.1)


def test_mlp_is_refused():
    cfg = cfg_of(method="byrd-saga", model="mlp", model_params=dict(hidden=[4]))
    with pytest.raises(ValueError, match="'mlp'.*non-convex.*softmax"):
        diagnose(cfg)


def test_no_l2_needs_a_ridge():
    cfg = cfg_of(method="byrd-saga")
    with pytest.raises(ValueError, match="ridge"):
        diagnose(cfg)
    d = diagnose(cfg, ridge=0.1)
    assert d.mu == pytest.approx(0.1) and "ridge" in d.format()
    with pytest.raises(ValueError, match="ridge"):
        diagnose(cfg, ridge=-1.0)


def test_cli(capsys):
    args = [f"{k}={v}" for k, v in dict(method="rsa", dataset="synthetic", n_clients=6, n_byzantine=1,
                                        server_l2=0.1).items()]
    args += ["dataset_params.n_samples=240", "dataset_params.n_test=60"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "Lemma 1" in out and "x*" in out
    assert main(args[:1] + ["dataset=synthetic", "model=mlp"]) == 2
    assert "non-convex" in capsys.readouterr().err
