"""Tests of samedge_lib.engine.models: sizes, official initialisers, layouts, masks, second-order derivatives."""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import stats
from torch import nn

from samedge_lib.engine.losses import squared_error_mean, token_cross_entropy
from samedge_lib.engine.models import (
    CNN,
    MLP,
    TRUNCATED_NORMAL_STD_FACTOR,
    ChannelLayerNorm,
    CharTransformer,
    compute_fans,
    count_parameters,
    glorot_normal_,
    make_generator,
    make_model,
    truncated_normal_,
    variance_scaling_,
)

SMALL_TRANSFORMER = dict(vocab_size=11, seq_len=6, d_model=8, num_layers=2, num_heads=2, key_size=4, widening_factor=2)
SMALL_CNN = dict(in_channels=2, num_blocks=2, layers_per_block=2, feature_multiplier=3, n_out=4, image_size=8)


# ---------------------------------------------------------------------------------------------------------
# sizes and factory
# ---------------------------------------------------------------------------------------------------------


@functools.cache
def _default_model(task: str) -> nn.Module:
    """The default-size model of ``task`` with seed 0, built once (2.8M truncated normals take ~1 s)."""
    return make_model(task, seed=0)


@pytest.mark.parametrize(
    ("task", "cls", "expected"),
    [("mnist", MLP, 2_797_010), ("cifar10", CNN, 25_674), ("shakespeare", CharTransformer, 1_626_496)],
)
def test_default_parameter_counts(task: str, cls: type, expected: int) -> None:
    model = _default_model(task)
    assert isinstance(model, cls)
    assert count_parameters(model) == expected


def test_parameter_counts_by_hand_at_other_sizes() -> None:
    # MLP: (in+1)w + (depth-2)(w+1)w + (w+1)out
    assert count_parameters(MLP(in_dim=5, depth=3, width=7, n_out=2, seed=0)) == 6 * 7 + 8 * 7 + 8 * 2
    assert count_parameters(MLP(in_dim=5, depth=1, n_out=2, seed=0)) == 6 * 2
    # CNN: two blocks of two convs, 3 then 6 channels, 8x8 -> 2x2 x 6 -> 4
    m = CNN(**SMALL_CNN, seed=0)
    convs = (2 * 9 + 1) * 3 + (3 * 9 + 1) * 3 + (3 * 9 + 1) * 6 + (6 * 9 + 1) * 6
    assert count_parameters(m) == convs + 2 * (3 + 3 + 6 + 6) + (2 * 2 * 6 + 1) * 4


def test_make_model_rejects_unknown_task_and_argument() -> None:
    with pytest.raises(ValueError, match="'mnist', 'cifar10', 'shakespeare'"):
        make_model("imagenet")
    with pytest.raises(ValueError, match="depth"):
        make_model("mnist", depht=3)
    assert make_model("mnist", width=3, depth=2, seed=1).layers[0].weight.shape == (3, 784)


@pytest.mark.parametrize(
    ("cls", "kwargs"),
    [
        (MLP, {"depth": 0}),
        (MLP, {"width": 2.5}),
        (CNN, {"image_size": 3}),
        (CharTransformer, {"pad_token": 128}),
    ],
)
def test_constructors_reject_bad_sizes(cls: type, kwargs: dict) -> None:
    with pytest.raises(ValueError):
        cls(**kwargs)


# ---------------------------------------------------------------------------------------------------------
# initialisers
# ---------------------------------------------------------------------------------------------------------


def test_compute_fans_counts_the_receptive_field() -> None:
    assert compute_fans((1000, 784)) == (784, 1000)
    assert compute_fans((32, 16, 3, 3)) == (144, 288)
    with pytest.raises(ValueError):
        compute_fans((5,))


def _check_truncated(w: torch.Tensor, pre_std: float, rel_tol: float = 0.03) -> None:
    """Realised std = 0.8796 pre_std, support [-2 pre_std, 2 pre_std], and the bound is actually reached."""
    w = w.detach().double().flatten()
    assert abs(w.std().item() / (TRUNCATED_NORMAL_STD_FACTOR * pre_std) - 1) < rel_tol
    assert abs(w.mean().item()) < 5 * pre_std / math.sqrt(w.numel())
    assert w.abs().max().item() <= 2 * pre_std * (1 + 1e-6)
    # Truncating at 2 *realised* stds instead would leave nothing above 1.76 pre_std.
    assert w.abs().max().item() > 1.9 * pre_std


def test_truncated_normal_matches_the_truncated_normal_distribution() -> None:
    w = truncated_normal_(torch.empty(20000), 0.3, torch.Generator().manual_seed(0))
    _check_truncated(w, 0.3, rel_tol=0.02)
    ks = stats.kstest(w.numpy(), stats.truncnorm(-2, 2, scale=0.3).cdf)
    assert ks.pvalue > 1e-3
    with pytest.raises(ValueError):
        truncated_normal_(torch.empty(3), -1.0)


def test_variance_scaling_modes() -> None:
    g = torch.Generator().manual_seed(1)
    w = torch.empty(300, 100)  # fan_in 100, fan_out 300
    for mode, n in (("fan_in", 100), ("fan_out", 300), ("fan_avg", 200)):
        variance_scaling_(w, 0.5, mode, g)
        _check_truncated(w, math.sqrt(0.5 / n) / TRUNCATED_NORMAL_STD_FACTOR)
    with pytest.raises(ValueError, match="mode"):
        variance_scaling_(w, 1.0, "fan_sum")
    conv = glorot_normal_(torch.empty(128, 64, 3, 3), g)
    _check_truncated(conv, math.sqrt(2 / (9 * 64 + 9 * 128)) / TRUNCATED_NORMAL_STD_FACTOR)


def test_mlp_init_is_jax_glorot_normal() -> None:
    m = _default_model("mnist")
    for layer in m.layers:
        fan_out, fan_in = layer.weight.shape
        _check_truncated(layer.weight, math.sqrt(2 / (fan_in + fan_out)) / TRUNCATED_NORMAL_STD_FACTOR)
        assert torch.count_nonzero(layer.bias) == 0
    big = m.layers[1].weight.detach().flatten()[:20000].double().numpy()
    s = math.sqrt(2 / 2000) / TRUNCATED_NORMAL_STD_FACTOR
    assert stats.kstest(big, stats.truncnorm(-2, 2, scale=s).cdf).pvalue > 1e-3


def test_cnn_init_is_glorot_with_receptive_field() -> None:
    m = CNN(feature_multiplier=64, seed=0)
    conv2 = m.convs[1].weight
    _check_truncated(conv2, math.sqrt(2 / (9 * 64 + 9 * 128)) / TRUNCATED_NORMAL_STD_FACTOR)
    head = m.head.weight  # (10, 8*8*128)
    _check_truncated(head, math.sqrt(2 / (8 * 8 * 128 + 10)) / TRUNCATED_NORMAL_STD_FACTOR)
    for conv, norm in zip(m.convs, m.norms, strict=True):
        assert torch.count_nonzero(conv.bias) == 0
        assert torch.all(norm.weight == 1) and torch.all(norm.bias == 0)


def test_transformer_init_is_haiku() -> None:
    m = _default_model("shakespeare")
    _check_truncated(m.token_embedding.weight, 0.02)
    _check_truncated(m.positional_embedding, 0.02, rel_tol=0.04)
    _check_truncated(m.head.weight, 1 / math.sqrt(128), rel_tol=0.04)

    def vs(fan_in: int) -> float:  # VarianceScaling(2/6), fan_in, truncated
        return math.sqrt((1 / 3) / fan_in) / TRUNCATED_NORMAL_STD_FACTOR

    groups = {
        128: [w for b in m.blocks for w in (b.attention.query.weight, b.attention.key.weight, b.attention.value.weight)]
        + [b.fc1.weight for b in m.blocks],
        256: [b.attention.output.weight for b in m.blocks],
        512: [b.fc2.weight for b in m.blocks],
    }
    for fan_in, ws in groups.items():
        assert all(w.shape[1] == fan_in for w in ws)
        _check_truncated(torch.cat([w.flatten() for w in ws]), vs(fan_in), rel_tol=0.02)
    for name, p in m.named_parameters():
        if "ln_" in name:
            assert torch.all(p == (1.0 if name.endswith("weight") else 0.0)), name
        elif name.endswith("bias"):
            assert torch.count_nonzero(p) == 0, name


@pytest.mark.parametrize(
    ("cls", "kwargs"),
    [(MLP, {"width": 20, "depth": 3}), (CNN, SMALL_CNN), (CharTransformer, SMALL_TRANSFORMER)],
)
def test_seeds_are_reproducible_and_distinct(cls: type, kwargs: dict) -> None:
    def flat(m: nn.Module) -> torch.Tensor:
        return torch.cat([p.detach().flatten() for p in m.parameters()])

    a, b, c = cls(**kwargs, seed=7), cls(**kwargs, seed=7), cls(**kwargs, seed=8)
    assert torch.equal(flat(a), flat(b))
    assert not torch.equal(flat(a), flat(c))
    d = cls(**kwargs, generator=torch.Generator().manual_seed(7))
    assert torch.equal(flat(a), flat(d))
    assert torch.equal(flat(a).double(), flat(cls(**kwargs, seed=7).double()))
    with pytest.raises(ValueError, match="not both"):
        cls(**kwargs, seed=1, generator=torch.Generator())


def test_make_generator_validates() -> None:
    assert make_generator() is None
    with pytest.raises(ValueError):
        make_generator(seed=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        make_generator(generator=3)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------------------
# MLP
# ---------------------------------------------------------------------------------------------------------


def test_mlp_forward_matches_hand_computation_and_accepts_images() -> None:
    m = MLP(in_dim=784, depth=3, width=9, n_out=10, seed=0)
    with torch.no_grad():
        for layer in m.layers:
            layer.bias.normal_()
    x = torch.randn(5, 1, 28, 28)
    h = x.reshape(5, 784)
    (w1, b1), (w2, b2), (w3, b3) = [(lay.weight, lay.bias) for lay in m.layers]
    ref = torch.relu(torch.relu(h @ w1.T + b1) @ w2.T + b2) @ w3.T + b3
    torch.testing.assert_close(m(x), ref)
    torch.testing.assert_close(m(h), ref)
    with pytest.raises(ValueError, match="784"):
        m(torch.randn(5, 3, 28, 28))


# ---------------------------------------------------------------------------------------------------------
# CNN
# ---------------------------------------------------------------------------------------------------------


def test_channel_layer_norm_normalises_over_channels_only() -> None:
    ln = ChannelLayerNorm(5, eps=1e-6)
    with torch.no_grad():
        ln.weight.uniform_(0.5, 2.0)
        ln.bias.normal_()
    x = torch.randn(2, 5, 4, 3, dtype=torch.float64) * 3 + 1
    ln = ln.double()
    out = ln(x)
    mean = x.mean(dim=1, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=1, keepdim=True)
    ref = (x - mean) / torch.sqrt(var + 1e-6) * ln.weight.view(1, 5, 1, 1) + ln.bias.view(1, 5, 1, 1)
    torch.testing.assert_close(out, ref)
    # Over channels only: a per-position shift/scale of the input leaves the output unchanged.
    shift = torch.randn(2, 1, 4, 3, dtype=torch.float64)
    torch.testing.assert_close(ln(3 * x + shift), ln(3 * x), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ln(x), ln(3 * x), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError):
        ln(torch.randn(2, 4, 4, 3))


def _nhwc_reference_cnn(m: CNN, x: torch.Tensor) -> torch.Tensor:
    """The CNN computed by hand, with the feature vector built element by element in NHWC order."""
    h = x
    for i, (conv, norm) in enumerate(zip(m.convs, m.norms, strict=True)):
        h = torch.relu(F.conv2d(h, conv.weight, conv.bias, padding=1))
        mu = h.mean(dim=1, keepdim=True)
        var = h.var(dim=1, unbiased=False, keepdim=True)
        h = (h - mu) / torch.sqrt(var + norm.eps) * norm.weight[:, None, None] + norm.bias[:, None, None]
        if i % m.layers_per_block == m.layers_per_block - 1:
            N, C, H, W = h.shape
            h = h.reshape(N, C, H // 2, 2, W // 2, 2).amax(dim=(3, 5))
    N, C, H, W = h.shape
    feats = torch.empty(N, H * W * C, dtype=h.dtype)
    for r in range(H):
        for s in range(W):
            for c in range(C):
                feats[:, (r * W + s) * C + c] = h[:, c, r, s]
    return feats @ m.head.weight.T + m.head.bias


def test_cnn_matches_hand_built_nhwc_reference() -> None:
    m = CNN(**SMALL_CNN, seed=0).double()
    with torch.no_grad():
        for p in m.parameters():  # make LayerNorm affine and biases non-trivial
            if p.dim() == 1:
                p.uniform_(0.5, 1.5)
    x = torch.randn(3, 2, 8, 8, dtype=torch.float64)
    torch.testing.assert_close(m(x), _nhwc_reference_cnn(m, x))
    # The NCHW flatten order would give a different answer: the test can tell the two apart.
    nchw = m.head(m.features(x).flatten(1))
    assert (nchw - m(x)).abs().max() > 1e-3
    assert m.final_shape_nhwc == (2, 2, 6)


def test_cnn_rejects_wrong_layout() -> None:
    m = CNN(seed=0)
    with pytest.raises(ValueError, match="permute"):
        m(torch.randn(2, 32, 32, 3))


# ---------------------------------------------------------------------------------------------------------
# Transformer
# ---------------------------------------------------------------------------------------------------------


def _gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))


def _reference_transformer(m: CharTransformer, tokens: torch.Tensor) -> torch.Tensor:
    """Independent einsum implementation of the Haiku model (pre-LN, key mask, -1e30, tanh GELU, final LN)."""

    def ln(h: torch.Tensor, mod: nn.LayerNorm) -> torch.Tensor:
        mu = h.mean(-1, keepdim=True)
        var = ((h - mu) ** 2).mean(-1, keepdim=True)
        return (h - mu) / torch.sqrt(var + mod.eps) * mod.weight + mod.bias

    B, T = tokens.shape
    h = m.token_embedding.weight[tokens] + m.positional_embedding[:T]
    allowed = torch.tril(torch.ones(T, T, dtype=torch.bool))[None, None] & (tokens != m.pad_token)[:, None, None, :]
    for blk in m.blocks:
        a = blk.attention
        H, K = a.num_heads, a.key_size
        x = ln(h, blk.ln_attention)
        q = (x @ a.query.weight.T + a.query.bias).reshape(B, T, H, K)
        k = (x @ a.key.weight.T + a.key.bias).reshape(B, T, H, K)
        v = (x @ a.value.weight.T + a.value.bias).reshape(B, T, H, K)
        logits = torch.einsum("bthk,bshk->bhts", q, k) / math.sqrt(K)
        logits = torch.where(allowed, logits, torch.full_like(logits, -1e30))
        att = torch.einsum("bhts,bshk->bthk", torch.softmax(logits, -1), v).reshape(B, T, H * K)
        h = h + att @ a.output.weight.T + a.output.bias
        x = ln(h, blk.ln_mlp)
        h = h + _gelu_tanh(x @ blk.fc1.weight.T + blk.fc1.bias) @ blk.fc2.weight.T + blk.fc2.bias
    return ln(h, m.ln_final) @ m.head.weight.T + m.head.bias


def _randomise(m: nn.Module, seed: int = 0) -> None:
    """Give every parameter (biases and LayerNorm affines included) a generic value."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g, dtype=p.dtype))


def test_transformer_matches_independent_reference() -> None:
    m = CharTransformer(**SMALL_TRANSFORMER, seed=0).double()
    _randomise(m)
    tokens = torch.tensor([[3, 5, 0, 7, 10, 1], [1, 2, 3, 4, 5, 6]])
    out = m(tokens)
    assert out.shape == (2, 6, 11)
    torch.testing.assert_close(out, _reference_transformer(m, tokens))
    torch.testing.assert_close(m(tokens[:, :4]), out[:, :4])  # shorter sequences use the first positions


def test_attention_agrees_with_torch_multihead_attention() -> None:
    m = CharTransformer(vocab_size=5, seq_len=7, d_model=12, num_layers=1, num_heads=3, key_size=4, seed=1).double()
    _randomise(m)
    a = m.blocks[0].attention
    ref = nn.MultiheadAttention(12, 3, bias=True, batch_first=True, dtype=torch.float64)
    with torch.no_grad():
        ref.in_proj_weight.copy_(torch.cat([a.query.weight, a.key.weight, a.value.weight]))
        ref.in_proj_bias.copy_(torch.cat([a.query.bias, a.key.bias, a.value.bias]))
        ref.out_proj.weight.copy_(a.output.weight)
        ref.out_proj.bias.copy_(a.output.bias)
    x = torch.randn(2, 7, 12, dtype=torch.float64)
    causal = torch.ones(7, 7, dtype=torch.bool).tril()
    expected, _ = ref(x, x, x, attn_mask=~causal, need_weights=False)
    torch.testing.assert_close(a(x, causal.view(1, 1, 7, 7)), expected)


def test_transformer_is_causal() -> None:
    m = CharTransformer(**SMALL_TRANSFORMER, seed=2)
    _randomise(m, 1)
    tokens = torch.tensor([[1, 4, 2, 8, 5, 7]])
    base = m(tokens)
    for t in range(5):
        changed = tokens.clone()
        changed[0, t + 1] = 3 if tokens[0, t + 1] != 3 else 9
        out = m(changed)
        torch.testing.assert_close(out[:, : t + 1], base[:, : t + 1], rtol=0, atol=0)
        assert (out[:, t + 1] - base[:, t + 1]).abs().max() > 1e-4


def test_pad_tokens_are_masked_as_keys() -> None:
    m = CharTransformer(**SMALL_TRANSFORMER, seed=3)
    _randomise(m, 2)
    tokens = torch.tensor([[4, 2, 0, 6, 9, 1]])
    base = m(tokens)
    with torch.no_grad():
        # change the pad token's content (randomly: LayerNorm would absorb a constant shift)
        m.token_embedding.weight[0].add_(torch.randn(8, generator=torch.Generator().manual_seed(0)))
    out = m(tokens)
    others = [0, 1, 3, 4, 5]
    torch.testing.assert_close(out[:, others], base[:, others], rtol=0, atol=0)
    assert (out[:, 2] - base[:, 2]).abs().max() > 1e-4  # the pad position's own output still depends on it
    unmasked = CharTransformer(**SMALL_TRANSFORMER, pad_token=None, seed=3)
    unmasked.load_state_dict(m.state_dict())
    assert (unmasked(tokens)[:, 3:] - out[:, 3:]).abs().max() > 1e-4
    # A leading pad masks every key of position 0: -1e30 (not -inf) keeps the output finite, as in Haiku.
    assert torch.isfinite(m(torch.tensor([[0, 3, 4]]))).all()


def test_transformer_rejects_bad_tokens() -> None:
    m = CharTransformer(**SMALL_TRANSFORMER, seed=0)
    with pytest.raises(ValueError, match="integer token ids"):
        m(torch.zeros(1, 4))
    with pytest.raises(ValueError, match="seq_len"):
        m(torch.ones(1, 7, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\[0, 11\)"):
        m(torch.tensor([[1, 11]]))


# ---------------------------------------------------------------------------------------------------------
# second-order differentiability (what the Hessian code needs)
# ---------------------------------------------------------------------------------------------------------


def _loss_of_params(model: nn.Module, loss, x: torch.Tensor, y: torch.Tensor):
    names = [n for n, _ in model.named_parameters()]

    def f(params: tuple[torch.Tensor, ...]) -> torch.Tensor:
        return loss(torch.func.functional_call(model, dict(zip(names, params, strict=True)), (x,)), y)

    return f


def _double_backward_hvp(f, params: tuple[torch.Tensor, ...], v: tuple[torch.Tensor, ...]) -> torch.Tensor:
    ps = tuple(p.detach().clone().requires_grad_(True) for p in params)
    grads = torch.autograd.grad(f(ps), ps, create_graph=True)
    dot = sum((g * vi).sum() for g, vi in zip(grads, v, strict=True))
    return torch.cat([h.flatten() for h in torch.autograd.grad(dot, ps)])


def _finite_difference_hvp(f, params, v, eps: float) -> torch.Tensor:
    def grad_at(scale: float) -> torch.Tensor:
        ps = tuple((p + scale * vi).detach().requires_grad_(True) for p, vi in zip(params, v, strict=True))
        return torch.cat([g.flatten() for g in torch.autograd.grad(f(ps), ps)])

    return (grad_at(eps) - grad_at(-eps)) / (2 * eps)


def _forward_over_reverse_hvp(f, params, v) -> torch.Tensor:
    _, hv = torch.func.jvp(torch.func.grad(f), (params,), (v,))
    return torch.cat([h.flatten() for h in hv])


def _setup(kind: str):
    g = torch.Generator().manual_seed(0)
    if kind == "transformer":
        model = CharTransformer(**SMALL_TRANSFORMER, seed=0).double()
        x = torch.randint(1, 11, (3, 6), generator=g)
        y = torch.randint(0, 11, (3, 6), generator=g)
        loss = token_cross_entropy
    else:
        model = CNN(**SMALL_CNN, seed=0).double()
        x = torch.randn(4, 2, 8, 8, generator=g, dtype=torch.float64)
        y = F.one_hot(torch.randint(0, 4, (4,), generator=g), 4).double()
        loss = squared_error_mean
    _randomise(model, 5)
    params = tuple(p.detach() for p in model.parameters())
    v = tuple(torch.randn(p.shape, generator=g, dtype=torch.float64) for p in params)
    norm = math.sqrt(sum((vi**2).sum().item() for vi in v))
    v = tuple(vi / norm for vi in v)
    return _loss_of_params(model, loss, x, y), params, v


@pytest.mark.parametrize("kind", ["transformer", "cnn"])
def test_double_backward_hvp_matches_finite_differences(kind: str) -> None:
    f, params, v = _setup(kind)
    exact = _double_backward_hvp(f, params, v)
    fd = _finite_difference_hvp(f, params, v, eps=1e-5)
    assert exact.norm() > 1e-3
    assert ((exact - fd).norm() / exact.norm()).item() < 1e-6


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")  # torch's own jvp set-up
@pytest.mark.parametrize("kind", ["transformer", "cnn"])
def test_forward_over_reverse_hvp_matches_double_backward(kind: str) -> None:
    f, params, v = _setup(kind)
    exact = _double_backward_hvp(f, params, v)
    fwd = _forward_over_reverse_hvp(f, params, v)
    torch.testing.assert_close(fwd, exact, rtol=1e-10, atol=1e-12)


def test_hessian_is_symmetric_through_the_transformer() -> None:
    f, params, v = _setup("transformer")
    g = torch.Generator().manual_seed(9)
    u = tuple(torch.randn(p.shape, generator=g, dtype=torch.float64) for p in params)
    flat_u = torch.cat([t.flatten() for t in u])
    flat_v = torch.cat([t.flatten() for t in v])
    lhs = flat_u @ _double_backward_hvp(f, params, v)
    rhs = flat_v @ _double_backward_hvp(f, params, u)
    assert np.isclose(lhs.item(), rhs.item(), rtol=1e-10, atol=1e-14)
