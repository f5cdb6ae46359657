"""The embedder: the official key layout and counts (docs/method.md#the-embedder), D read from fc2, and the pooling
against a float64 re-derivation of its pooling with the explicit [N, N] cosine matrix."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from audiotoken.embedder import Embedder
from runtime.errors import CheckpointError


def spec_keys(d: int) -> dict[str, tuple[int, ...]]:
    return {
        "fc1.weight": (2304, 2304),
        "fc1.bias": (2304,),
        "fc2.weight": (d, 2304),
        "fc2.bias": (d,),
        "fga.un_models.0.embed.weight": (d, d, 1),
        "fga.un_models.0.embed.bias": (d,),
        "fga.un_models.0.feature_reduce.weight": (1, d, 1),
        "fga.un_models.0.feature_reduce.bias": (1,),
        "fga.pp_models.0.embed_X.weight": (d, d, 1),
        "fga.pp_models.0.embed_X.bias": (d,),
        "fga.pp_models.0.embed_Y.weight": (d, d, 1),
        "fga.pp_models.0.embed_Y.bias": (d,),
        "fga.reduce_potentials.0.weight": (1, 2, 1),
    }


@pytest.mark.parametrize(("d", "count"), [(768, 8_853_507), (1024, 10_820_867)])
def test_official_layout_and_parameter_count(d, count):
    with torch.device("meta"):
        model = Embedder(2304, d)
    state = model.state_dict()
    assert {k: tuple(v.shape) for k, v in state.items()} == spec_keys(d)
    assert sum(v.numel() for v in state.values()) == count


def spec_patches(state: dict, features: torch.Tensor) -> torch.Tensor:
    """The per-patch vectors h = fc2(GELU(fc1(u))) (docs/method.md#the-embedder) for one clip, features [N, 3C] ->
    [N, D], float64."""
    w = {k: v.double() for k, v in state.items()}
    return F.gelu(features.double() @ w["fc1.weight"].T + w["fc1.bias"]) @ w["fc2.weight"].T + w["fc2.bias"]  # [N, D]


def spec_unary_terms(state: dict, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The unary potential u_n = w_r . r_n + b_r without dropout, and the per-unit terms w_r * r_n, for h [N, D] (float64).

    Under the official dropout (p = 0.5, kept units x2, docs/method.md#quirks, Q1) u_n becomes sum_d w_d r_nd (2 m_nd) +
    b_r with independent m ~ Bernoulli(1/2): its mean is u_n and its variance sum_d (w_d r_nd)^2, since (2m - 1)^2 = 1.
    """
    w = {k: v.double() for k, v in state.items()}
    r = torch.relu(h @ w["fga.un_models.0.embed.weight"][:, :, 0].T + w["fga.un_models.0.embed.bias"])  # [N, D]
    terms = r * w["fga.un_models.0.feature_reduce.weight"][0, :, 0]  # [N, D]
    return terms.sum(dim=1) + w["fga.un_models.0.feature_reduce.bias"], terms  # [N], [N, D]


def spec_reference_token(state: dict, features: torch.Tensor, unary: torch.Tensor | None = None) -> torch.Tensor:
    """The embedder (docs/method.md#the-embedder) for one clip, features [N, 3C] -> token [D], float64; without the
    official dropout, or with the unary potential ``unary`` [N] that one dropout draw gave."""
    w = {k: v.double() for k, v in state.items()}
    h = spec_patches(state, features)  # [N, D]
    if unary is None:
        unary, _ = spec_unary_terms(state, h)  # [N]
    x = F.normalize(h @ w["fga.pp_models.0.embed_X.weight"][:, :, 0].T + w["fga.pp_models.0.embed_X.bias"], dim=1)
    y = F.normalize(h @ w["fga.pp_models.0.embed_Y.weight"][:, :, 0].T + w["fga.pp_models.0.embed_Y.bias"], dim=1)
    pairwise = (x @ y.T).mean(dim=1)  # [N]: s_n = mean_m <x_n, y_m>
    c = w["fga.reduce_potentials.0.weight"][0, :, 0]  # [unary, pairwise]
    alpha = torch.softmax(c[0] * unary.double() + c[1] * pairwise, dim=0)  # [N]
    return alpha @ h  # [D]


@pytest.fixture(scope="module")
def embedder_file(tmp_path_factory):
    torch.manual_seed(3)
    model = Embedder(96, 32)
    with torch.no_grad():  # make every potential matter: default init leaves the reduce weights tiny
        model.fga.reduce_potentials[0].weight.copy_(torch.tensor([[[1.5], [4.0]]]))
    path = tmp_path_factory.mktemp("embedder") / "embedder.bin"
    torch.save(model.state_dict(), path)
    return path


@pytest.mark.parametrize("n_tokens", [496, 248])  # inference (10 s) and training (5 s) lengths
def test_pooling_matches_the_spec_reference(embedder_file, n_tokens):
    model = Embedder.from_file(embedder_file)
    state = torch.load(embedder_file, weights_only=True)
    features = torch.randn(2, n_tokens, 96)
    tokens = model(features)
    assert tokens.shape == (2, 32)
    for b in range(2):
        reference = spec_reference_token(state, features[b])
        assert torch.allclose(tokens[b].double(), reference, atol=1e-5), (tokens[b].double() - reference).abs().max()


def test_token_dim_is_read_from_fc2(tmp_path):
    torch.save(Embedder(96, 48).state_dict(), tmp_path / "wide.bin")
    assert Embedder.from_file(tmp_path / "wide.bin").token_dim == 48


def test_eval_is_deterministic_and_official_dropout_is_opt_in(embedder_file):
    features = torch.randn(1, 248, 96)
    deterministic = Embedder.from_file(embedder_file)
    assert torch.equal(deterministic(features), deterministic(features))
    official = Embedder.from_file(embedder_file, stochastic=True)
    torch.manual_seed(0)
    draws = torch.stack([official(features)[0] for _ in range(4)])  # [4, D]
    expected = deterministic(features)[0]
    # the official unary dropout stays on in eval (docs/method.md#quirks, Q1)
    assert not torch.allclose(draws[0], draws[1])
    assert all(not torch.allclose(draw, expected, atol=1e-3) for draw in draws)


def test_official_dropout_is_unbiased_with_the_variance_of_p_one_half(embedder_file):
    """docs/method.md#quirks, Q1: p = 0.5 with kept units x2 leaves the unary potential's mean at the deterministic
    value (identity is its expectation) and gives it the variance sum_d (w_d r_nd)^2; measured over K draws, within CLT
    bounds."""
    state = torch.load(embedder_file, weights_only=True)
    official = Embedder.from_file(embedder_file, stochastic=True)
    features = torch.randn(1, 248, 96, generator=torch.Generator().manual_seed(1))
    h = spec_patches(state, features[0])  # [N, D]
    mean, terms = spec_unary_terms(state, h)  # [N], [N, D]
    variance = (terms**2).sum(dim=1)  # [N]
    K = 4000
    torch.manual_seed(1)
    draws = official.fga.un_models[0](h.T.float()[None].expand(K, -1, -1), stochastic=True).double()  # [K, N]: K masks
    # the mean of K draws: within 5 standard errors of the deterministic potential, at every patch (N = 248 patches,
    # so a 5-sigma miss has probability ~1e-4 in all); standard errors from the predicted variance
    z = (draws.mean(dim=0) - mean) / (variance / K).sqrt()
    assert z.abs().max() < 5, z.abs().max()
    # the sample variance: its relative standard error is at most sqrt(2 / K) (a Rademacher sum has kurtosis <= 3),
    # so 5 of them is 11 %; p = 0.1 would give 1/9 of it, no x2 scaling 1/4 (and half the mean)
    ratio = draws.var(dim=0) / variance  # [N]
    assert (ratio - 1).abs().max() < 5 * (2 / K) ** 0.5, ratio
    # and each draw is the embedder's pooling of that draw's unary potential (the generator replays the same masks)
    for seed in range(3):
        torch.manual_seed(seed)
        token = official(features)[0]
        torch.manual_seed(seed)
        unary = official.fga.un_models[0](
            official.fc2(F.gelu(official.fc1(features))).transpose(1, 2), stochastic=True
        )[0]
        reference = spec_reference_token(state, features[0], unary)
        assert torch.allclose(token.double(), reference, atol=1e-5), (token.double() - reference).abs().max()


def test_a_foreign_state_dict_is_refused_with_its_name(tmp_path):
    torch.save({"weight": torch.zeros(3)}, tmp_path / "other.bin")
    with pytest.raises(CheckpointError, match=r"other\.bin: expected an AudioToken embedder state_dict"):
        Embedder.from_file(tmp_path / "other.bin")
    state = Embedder(96, 32).state_dict()
    del state["fga.reduce_potentials.0.weight"]
    torch.save(state, tmp_path / "partial.bin")
    with pytest.raises(
        CheckpointError,
        match=r"partial\.bin: does not match the Embedder layout \(missing: fga\.reduce_potentials\.0\.weight",
    ):
        Embedder.from_file(tmp_path / "partial.bin")
