"""ACTIVA: shapes, NB observation model, adversarial gradient into the decoder, frozen ACTINN,
SoftAdapt, best-epoch restore, checkpoint/resume, generation, bad input."""

import copy

import numpy as np
import pytest
import torch
from _augment_toy import toy_cells

from cellgnn.augment.activa import (ActivaConfig, ActivaTrainer, NonFiniteLossError, generate, kl_divergence,
                                    load_activa, nb_nll)
from cellgnn.errors import CellgnnInputError

torch.set_num_threads(1)


def _cfg(**kw):
    base = dict(hidden=[32, 16, 8], latent=4, clf_hidden=[16, 16, 8], epochs=4, warmup_epochs=2, clf_epochs=3,
                batch_size=32, m=5.0, lr=3e-3, clf_lr=1e-2, checkpoint_every=1, device="cpu")
    base.update(kw)
    return ActivaConfig(**base)


@pytest.fixture(scope="module")
def toy():
    x, lab, lib = toy_cells()
    classes = sorted(set(lab))
    return x, lib, np.array([classes.index(c) for c in lab]), classes, lab


def _trainer(toy, checkpoint=None, genes=None, **kw):
    x, lib, y, classes, _ = toy
    return ActivaTrainer(x, lib, y, classes, _cfg(**kw), checkpoint=checkpoint, genes=genes)


def test_architecture_defaults_match_paper():
    rng = np.random.default_rng(0)
    t = ActivaTrainer(rng.random((4, 20)).astype(np.float32), np.full(4, 100.0), np.array([0, 1, 0, 1]),
                      ["a", "b"], ActivaConfig(device="cpu"))
    outs = lambda mod: [m.out_features for m in mod.modules() if isinstance(m, torch.nn.Linear)]  # noqa: E731
    assert outs(t.model.encoder) == [1024, 512, 256, 256]
    assert outs(t.model.decoder.body) == [256, 512, 1024]
    assert t.model.decoder.rho.out_features == 20 and t.model.decoder.library.out_features == 2
    assert outs(t.model.classifier) == [100, 50, 25, 2]
    cfg = ActivaConfig()
    assert (cfg.latent, cfg.lr, cfg.batch_size, cfg.m, cfg.warmup_epochs) == (128, 2e-4, 128, 110.0, 10)


def test_kl_zero_at_prior():
    assert torch.allclose(kl_divergence(torch.zeros(3, 4), torch.zeros(3, 4)), torch.zeros(3))
    assert kl_divergence(torch.ones(1, 2), torch.zeros(1, 2)).item() == pytest.approx(1.0)


def test_nb_nll_matches_scipy():
    from scipy import stats

    c = torch.tensor([[0.0, 3.0, 17.0]])
    mean, theta = torch.tensor([[2.0, 5.0, 9.0]]), torch.tensor([0.7, 2.0, 30.0])
    expect = -sum(stats.nbinom.logpmf(k, t, t / (t + m)) for k, m, t in zip([0, 3, 17], [2.0, 5.0, 9.0],
                                                                            [0.7, 2.0, 30.0]))
    assert nb_nll(c, mean.log(), theta).item() == pytest.approx(expect, rel=1e-5)


def test_observation_model_moments_and_units(toy):
    m = _trainer(toy).model
    g = torch.Generator().manual_seed(0)
    log_rho = torch.log_softmax(torch.randn(1, 16, generator=g), 1).expand(20000, 16)
    lib = torch.full((20000,), 400.0)
    with torch.no_grad():
        m.decoder.log_theta.fill_(np.log(2.0))
        nb = m.observe(log_rho, lib, g, "nb")
        po = m.observe(log_rho, lib, g, "poisson")
        mean = m.observe(log_rho, lib, g, "mean")
    np.testing.assert_allclose(nb.sum(1).numpy(), 20000, rtol=1e-4)
    np.testing.assert_allclose(mean.sum(1).numpy(), 20000, rtol=1e-4)
    np.testing.assert_allclose(mean[0].numpy(), 20000 * log_rho[0].exp().numpy(), rtol=1e-4)
    # zeros are not changed by normalization: P(0) = (θ/(θ+μ))^θ for NB, exp(−μ) for Poisson
    mu = (400 * log_rho[0].exp()).numpy()
    np.testing.assert_allclose((nb == 0).float().mean(0).numpy(), (2.0 / (2.0 + mu)) ** 2.0, atol=0.015)
    np.testing.assert_allclose((po == 0).float().mean(0).numpy(), np.exp(-mu), atol=0.015)
    # straight-through: gradients reach the gene proportions
    lr = log_rho[:4].clone().requires_grad_(True)
    m.observe(lr, lib[:4], g, "nb", straight_through=True)[:, 0].sum().backward()
    assert lr.grad is not None and lr.grad.abs().sum() > 0


def test_decoder_receives_adversarial_gradient(toy):
    t = _trainer(toy)
    t.fit_classifier()
    x, lib, _, _, _ = toy
    xb, lb = torch.from_numpy(x[:32]), torch.from_numpy(lib[:32]).float()
    terms = t.losses(xb, lb, xb * lb[:, None] / 20000, warmup=False)
    g_adv = torch.autograd.grad(terms["adv_gen"], t.dec_params, retain_graph=True, allow_unused=True)
    assert sum(float(g.abs().sum()) for g in g_adv if g is not None) > 0  # the public code detaches: 0
    g_enc = torch.autograd.grad(terms["encoder"], t.enc_params, retain_graph=True)
    assert sum(float(g.abs().sum()) for g in g_enc) > 0


def test_classifier_trained_first_then_frozen_and_learns(toy):
    x, _, y, _, _ = toy
    t = _trainer(toy, epochs=12, warmup_epochs=8, clf_epochs=20)
    h = t.fit(progress=False)
    assert h[-1]["ae"] < h[0]["ae"]
    assert {r["phase"] for r in h} == {"warmup", "introspective"}
    assert not any(p.requires_grad for p in t.model.classifier.parameters())
    frozen = copy.deepcopy(t.model.classifier.state_dict())
    t.cfg.epochs = 14
    t.fit(progress=False)
    assert all(torch.equal(a, b) for a, b in zip(frozen.values(), t.model.classifier.state_dict().values()))
    with torch.no_grad():
        acc = (t.model.classify(torch.from_numpy(x)).argmax(1).numpy() == y).mean()
    assert acc > 0.9


def test_class_balanced_classifier_calls_a_rare_population():
    x, lab, lib = toy_cells(n_per=(120, 120, 6), seed=3)
    classes = sorted(set(lab))
    y = np.array([classes.index(c) for c in lab])
    t = ActivaTrainer(x, lib, y, classes, _cfg(clf_epochs=40))
    t.fit_classifier()
    with torch.no_grad():
        pred = t.model.classify(torch.from_numpy(x[lab == "pop2"])).argmax(1).numpy()
    assert (pred == 2).mean() >= 0.5


def test_softadapt_changes_weights(toy):
    on = _trainer(toy, epochs=6, beta=5.0).fit(progress=False)
    off = _trainer(toy, epochs=6, softadapt=False).fit(progress=False)
    assert all(r["lambda_adv"] == 1.0 for r in off if "lambda_adv" in r)
    lam = [r["lambda_adv"] for r in on if "lambda_adv" in r]
    assert lam[0] == 1.0 and any(abs(v - 1.0) > 1e-6 for v in lam[2:])
    assert all(abs(r["lambda_adv"] + r["lambda_rec"] - 2.0) < 1e-9 for r in on if "lambda_adv" in r)


def test_introspective_epochs_use_adv_lr(toy):
    t = _trainer(toy, epochs=2, warmup_epochs=2, adv_lr=1e-5)
    t.fit(progress=False)
    assert {g["lr"] for o in (t.opt_e, t.opt_d) for g in o.param_groups} == {3e-3}
    t.cfg.epochs = 3
    t.fit(progress=False)
    assert {g["lr"] for o in (t.opt_e, t.opt_d) for g in o.param_groups} == {1e-5}


def test_best_validation_epoch_is_restored(toy):
    t = _trainer(toy, epochs=4)
    scores, states = iter([3.0, 1.0, 2.0, 5.0]), []

    def val(model):
        states.append(copy.deepcopy(model.state_dict()))
        return next(scores)

    h = t.fit(val, progress=False)
    assert [r["val_score"] for r in h] == [3.0, 1.0, 2.0, 5.0] and t.best["epoch"] == 2
    assert all(torch.equal(a, b) for a, b in zip(states[1].values(), t.model.state_dict().values()))
    assert not all(torch.equal(a, b) for a, b in zip(states[3].values(), t.model.state_dict().values()))


def test_checkpoint_resume_is_identical(toy, tmp_path):
    full = _trainer(toy, epochs=4)
    full.fit(progress=False)
    ck = tmp_path / "ck.pt"
    _trainer(toy, checkpoint=ck, epochs=2).fit(progress=False)
    resumed = _trainer(toy, checkpoint=ck, epochs=4)
    assert resumed.epoch == 2 and resumed.clf_trained
    resumed.fit(progress=False)
    for a, b in zip(full.model.state_dict().values(), resumed.model.state_dict().values()):
        assert torch.equal(a, b)
    model, state = load_activa(ck)
    assert state["epoch"] == 4 and model.latent == 4
    assert _trainer(toy, checkpoint=ck, epochs=4, m=9.0).epoch == 0  # different config: afresh
    assert _trainer(toy, checkpoint=ck, epochs=4, genes=[f"g{i}" for i in range(16)]).epoch == 0  # other genes


def test_same_seed_same_numbers(toy):
    h1 = _trainer(toy).fit(progress=False)
    h2 = _trainer(toy).fit(progress=False)
    assert [r["ae"] for r in h1] == [r["ae"] for r in h2]


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(toy, tmp_path, monkeypatch):
    ck = tmp_path / "ck.pt"
    t = _trainer(toy, checkpoint=ck, epochs=5)
    real = ActivaTrainer.losses

    def poisoned(self, *args, **kwargs):
        out = real(self, *args, **kwargs)
        if self.epoch >= 3:
            out["ae"] = out["ae"] * float("nan")
        return out

    monkeypatch.setattr(ActivaTrainer, "losses", poisoned)
    with pytest.raises(NonFiniteLossError, match=r"epoch 4.*epoch 3\) is kept"):
        t.fit(progress=False)
    model, state = load_activa(ck)
    assert state["epoch"] == 3
    assert all(torch.isfinite(v).all() for v in model.state_dict().values() if v.is_floating_point())


def test_generate_population_observations_and_bad_input(toy, tmp_path):
    x, lib, y, classes, lab = toy
    genes = [f"g{i}" for i in range(x.shape[1])]
    t = _trainer(toy, genes=genes, epochs=30, warmup_epochs=25, batch_size=16, clf_epochs=30)
    t.fit(progress=False)
    cells = generate(t.model, 25, classes, "pop2", "posterior", x_population=x[lab == "pop2"], threshold=0.5)
    assert cells.shape == (25, x.shape[1]) and (cells >= 0).all()
    np.testing.assert_allclose(cells.sum(1), 20000, rtol=1e-4)
    with torch.no_grad():
        calls = t.model.classify(torch.from_numpy(cells)).softmax(1)[:, classes.index("pop2")]
    assert (calls >= 0.5).all()
    uncond = generate(t.model, 7, seed=3)
    np.testing.assert_array_equal(uncond, generate(t.model, 7, seed=3))
    mean = generate(t.model, 7, seed=3, observation="mean")
    assert (mean > 0).all() and (uncond == 0).any()  # the decoder's mean is dense, observed cells are not
    assert generate(t.model, 7, seed=3, library_sizes=np.array([5.0])).max() > 0
    with pytest.raises(CellgnnInputError, match="does not exist"):
        generate(t.model, 5, classes, "pop9")
    with pytest.raises(CellgnnInputError, match="accepted"):
        generate(t.model, 5, classes, "pop2", "prior", threshold=1.01, max_draws=100)
    with pytest.raises(CellgnnInputError, match="model has 16 genes"):
        generate(t.model, 5, classes, "pop2", "posterior", x_population=x[:, :10])
    t.save(tmp_path / "a.pt")
    assert load_activa(tmp_path / "a.pt", genes=genes)[1]["genes"] == genes
    with pytest.raises(CellgnnInputError, match="other genes") as e:
        load_activa(tmp_path / "a.pt", genes=genes[::-1])
    assert e.value.field == "genes" and e.value.file == str(tmp_path / "a.pt")


def test_bad_training_input(toy):
    x, lib, y, classes, _ = toy
    bad = x.copy()
    bad[0, 0] = np.nan
    with pytest.raises(CellgnnInputError, match="non-finite"):
        ActivaTrainer(bad, lib, y, classes, _cfg())
    with pytest.raises(CellgnnInputError, match="positive library size"):
        ActivaTrainer(x, np.r_[0.0, lib[1:]], y, classes, _cfg())
    with pytest.raises(CellgnnInputError, match="do not align"):
        ActivaTrainer(x, lib[:5], y, classes, _cfg())
    with pytest.raises(CellgnnInputError, match="warmup"):
        ActivaTrainer(x, lib, y, classes, _cfg(epochs=1, warmup_epochs=2))
