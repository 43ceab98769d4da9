"""PROSE (oplab.models.prose): tokenizer, generated ODE data, model contracts, training, decoding."""

import numpy as np
import pytest
import torch

from oplab.errors import DataFileError, ParameterError
from oplab.models import prose as P


@pytest.fixture(scope="module")
def ds():
    return P.make_dataset(18, seed=3, t_num=96, n_input=32)


def tiny(**kw):
    cfg = dict(d_model=32, heads=2, ffn=64, data_layers=1, symbol_layers=1, fusion_layers=1, decoder_layers=1,
               symbol_decoder_layers=1)
    cfg.update(kw)
    return P.PROSE(**cfg)


def test_numbers_round_to_three_significant_digits():
    assert P.encode_number(1.234) == ["+", "1", "2", "3", "E-2"]
    assert P.encode_number(-0.0456) == ["-", "4", "5", "6", "E-4"]
    assert P.encode_number(9.996) == ["+", "1", "0", "0", "E-1"]  # rounds up into the next decade
    assert P.encode_number(0.0) == ["+", "0", "0", "0", "E0"]
    for v in (1.234, -0.0456, 9.996, 123456.0, 3e-4):
        assert P.round_sig(v) == pytest.approx(v, rel=5e-3)
        assert P.round_sig(P.round_sig(v)) == P.round_sig(v)
    with pytest.raises(ParameterError, match="coefficient"):
        P.encode_number(float("nan"))


def test_tokenizer_round_trip_same_function_values():
    rng = np.random.default_rng(0)
    for family, (dim, *_rest) in P.FAMILIES.items():
        system = P.sample_system(family, rng)
        tokens = P.encode_system(system)
        decoded = P.decode_system(tokens)
        assert P.encode_system(decoded) == tokens
        y = rng.uniform(-2, 2, size=(7, dim))
        np.testing.assert_allclose(P.system_function(decoded)(y), P.system_function(system)(y), rtol=0, atol=0)
        assert P.system_function(decoded)(y).shape == (7, dim)
        ids = P.VOCAB.ids(tokens)
        assert P.VOCAB.tokens([P.BOS] + ids + [P.EOS, P.PAD]) == tokens
    # the decoded function is the written equation: Lotka-Volterra by hand
    lv = P.decode_system("add mul + 1 5 0 E-2 x0 mul - 5 0 0 E-3 mul x0 x1 | mul - 2 0 0 E-2 x1".split())
    np.testing.assert_allclose(P.system_function(lv)(np.array([2.0, 3.0])), [1.5 * 2 - 0.5 * 6, -2.0 * 3])


@pytest.mark.parametrize("bad", ["add x0", "mul + 1 2 E0 x0", "x0 x1", "sin", "x0 | frob x1"])
def test_malformed_tokens_raise(bad):
    with pytest.raises(ParameterError):
        P.decode_system(bad.split())


def test_generated_data_satisfy_their_equations(ds):
    """Fourth-order central differences of the stored trajectory match f(y) of the *decoded tokens*."""
    t = ds["t"]
    h = t[1] - t[0]
    for i in range(len(ds["dim"])):
        d = int(ds["dim"][i])
        y = np.concatenate([ds["data"][i], ds["query"][i]])[:, :d].astype(np.float64)
        np.testing.assert_allclose(y[0], ds["y0"][i, :d], rtol=1e-6)
        dy = (y[:-4] - 8 * y[1:-3] + 8 * y[3:-1] - y[4:]) / (12 * h)
        f = P.system_function(P.decode_system(ds["tokens"][i]))(y[2:-2])
        scale = np.abs(f).max()
        assert np.abs(dy - f).max() < 2e-3 * max(scale, 1.0), ds["families"][ds["family"][i]]
        # a wrong coefficient is detected: the noisy equation does not fit as well
        g = P.system_function(P.map_coefficients(ds["systems"][i], lambda c: 1.2 * c))(y[2:-2])
        assert np.abs(dy - g).max() > 5 * np.abs(dy - f).max()
    assert ds["data"].shape == (18, 32, 3) and ds["query"].shape == (18, 64, 3)
    assert np.all(ds["data"][ds["dim"] == 1][..., 1:] == 0)
    again = P.make_dataset(3, seed=3, t_num=96, n_input=32)  # sample i depends only on (seed, i)
    np.testing.assert_array_equal(again["query"], ds["query"][:3])
    assert again["tokens"] == ds["tokens"][:3]


def test_bad_parameters_raise():
    with pytest.raises(ParameterError, match="n must be"):
        P.make_dataset(0)
    with pytest.raises(ParameterError, match="families"):
        P.make_dataset(2, families=["nope"])
    with pytest.raises(ParameterError, match="n_input"):
        P.make_dataset(2, t_num=10, n_input=10)
    with pytest.raises(ParameterError, match="divisible"):
        P.PROSE(d_model=30, heads=4)
    with pytest.raises(ParameterError, match="symbols"):
        P.batch(P.make_dataset(1, t_num=8, n_input=4), [0], "maybe")


def test_shapes_and_masked_symbols_are_ignored(ds, one_thread):
    torch.manual_seed(0)
    model = tiny().eval()
    b = P.batch(ds, np.arange(6), "exact")
    values, logits = model(b["t_input"], b["data"], b["dim_mask"], b["t_query"], b["tokens"], b["use_symbols"],
                           b["target"][:, :-1])
    assert values.shape == (6, 64, 3)
    assert logits.shape == (6, b["target"].shape[1] - 1, len(P.VOCAB))
    off = torch.zeros(6, dtype=torch.bool)
    other = P.pad_tokens([ds["noisy_tokens"][i][::-1] for i in range(6, 12)])  # different tokens and lengths
    with torch.no_grad():
        v_none, _ = model(b["t_input"], b["data"], b["dim_mask"], b["t_query"])
        v_a, _ = model(b["t_input"], b["data"], b["dim_mask"], b["t_query"], b["tokens"], off)
        v_b, _ = model(b["t_input"], b["data"], b["dim_mask"], b["t_query"], other, off)
        v_on, _ = model(b["t_input"], b["data"], b["dim_mask"], b["t_query"], b["tokens"])
        # per-sample mask: masking sample 0 only leaves the others as with symbols
        part = torch.tensor([False, True, True, True, True, True])
        v_part, _ = model(b["t_input"], b["data"], b["dim_mask"], b["t_query"], b["tokens"], part)
    torch.testing.assert_close(v_a, v_b, rtol=0, atol=1e-6)
    torch.testing.assert_close(v_a, v_none, rtol=0, atol=1e-5)
    assert (v_on - v_a).abs().max() > 1e-3  # the symbols do matter when they are used
    torch.testing.assert_close(v_part[0], v_none[0], rtol=0, atol=1e-5)
    torch.testing.assert_close(v_part[1:], v_on[1:], rtol=0, atol=1e-5)
    # a query's answer does not depend on the other queries
    with torch.no_grad():
        v_sub = model.predict(*model.encode(b["t_input"], b["data"], b["dim_mask"], b["tokens"]), b["t_query"][5:9])
    torch.testing.assert_close(v_sub, v_on[:, 5:9], rtol=0, atol=1e-5)


def test_training_lowers_the_loss_and_save_load(ds, tmp_path, one_thread):
    torch.manual_seed(0)
    model = tiny()
    b = P.batch(ds, np.arange(18), "exact")
    with torch.no_grad():
        model.eval()
        before = [float(v) for v in P.losses(model, b)]
    hist = P.train_prose(model, ds, P.subset(ds, np.arange(6)), steps=24, batch_size=18, lr=3e-3, eval_every=12,
                         p_masked=0.0, p_noisy=0.0, n_query=8)
    assert hist["steps_done"] == 24 and hist["best_step"] in (12, 24)
    with torch.no_grad():
        model.eval()
        after = [float(v) for v in P.losses(model, b)]
    assert after[0] < 0.7 * before[0] and after[1] < 0.8 * before[1], (before, after)
    P.save_prose(model, tmp_path / "prose")
    again = P.load_prose(tmp_path / "prose")
    torch.testing.assert_close(P.predict_values(again, ds), P.predict_values(model.eval(), ds), rtol=0, atol=0)
    (tmp_path / "prose" / "config.json").write_text('{"kind": "lpn"}')
    with pytest.raises(DataFileError, match="PROSE"):
        P.load_prose(tmp_path / "prose")


def test_greedy_decoding_of_an_overfit_sample(ds, one_thread):
    """A model overfit on one sample decodes its tokens exactly from the data alone (symbols masked)."""
    torch.manual_seed(0)
    one = P.subset(ds, [4])  # van der Pol: 34 tokens
    model = tiny()
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    b = P.batch(one, [0], "none")
    for _ in range(70):
        mse, ce = P.losses(model, b, torch.arange(0, 64, 8))
        opt.zero_grad()
        (mse + ce).backward()
        opt.step()
    decoded = P.decode(model, one, "none")
    assert decoded == [one["tokens"][0]]
    m = P.decoded_metrics(decoded, one)
    assert m["exact"][0] and m["within_tol"][0] and m["traj_rel_l2"][0] < 1e-4
    # and a wrong decoding is scored as such
    wrong = P.decoded_metrics([["x0"]], one)
    assert not wrong["valid"][0] and np.isinf(wrong["traj_rel_l2"][0])
