"""The three networks of the paper's experiments, with the official initialisers.

The official code (https://github.com/google-deepmind/sam_edge) defines the MLP and the CNN in
``image_classification.py`` and the Transformer in ``transformer_model.py`` (after the Haiku example).

* :class:`MLP` -- MNIST: Flatten 784 -> [Dense 1000 -> ReLU] x 3 -> Dense 10, JAX ``glorot_normal`` kernels,
  zero biases (2,797,010 parameters).
* :class:`CNN` -- CIFAR-10 (1000 examples): [Conv3x3 SAME -> ReLU -> LayerNorm over channels] -> MaxPool 2/2,
  channels 16 then 32, flatten in **NHWC** order -> Dense 10 (25,674 parameters).
* :class:`CharTransformer` -- tiny_shakespeare: the Haiku example's pre-LayerNorm decoder, 6 blocks of
  8 heads of size 32, d_model 128, learned positional embeddings, untied head (1,626,496 parameters).

Initialisation follows JAX/Haiku exactly, including which standard deviation is "the" standard deviation:

* JAX ``glorot_normal`` and Haiku ``VarianceScaling`` draw a normal truncated to +-2 standard units and
  divide the pre-truncation std by ``0.8796...`` (the std of a standard normal truncated to [-2, 2]), so
  that the *realised* std is the nominal ``sqrt(scale / fan)``;
* Haiku ``TruncatedNormal(stddev)`` uses ``stddev`` as the *pre-truncation* std, so its realised std is
  ``0.8796 * stddev``.

Every model draws its weights from an explicit :class:`torch.Generator` (pass ``seed`` or ``generator``) in
the order of ``named_parameters()``; weights are always drawn in float32 (cast the model afterwards with
``.double()``), so a seed gives the same numbers in every dtype. The second-order code of the library
(double backward and ``torch.func.jvp`` over ``torch.func.grad``) works through all three models: nothing here
uses fused kernels without those derivatives (attention is an explicit ``matmul + softmax``).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

#: Std of a standard normal truncated to [-2, 2]; JAX/Haiku divide by it to undo the truncation.
TRUNCATED_NORMAL_STD_FACTOR = 0.87962566103423978

#: The value the official attention writes into masked logits (Haiku ``MultiHeadAttention``).
MASKED_LOGIT = -1e30


# ----------------------------------------------------------------------------------------------------------
# Initialisers
# ----------------------------------------------------------------------------------------------------------


def compute_fans(shape: Sequence[int]) -> tuple[int, int]:
    """``(fan_in, fan_out)`` of a weight in PyTorch layout, counting the receptive field as JAX does.

    A Linear weight is ``(out, in)``; a Conv weight is ``(out, in, *kernel)``. The receptive field
    ``prod(kernel)`` multiplies both fans, so a 3x3 conv has ``fan_in = 9 C_in``, ``fan_out = 9 C_out``.
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) < 2:
        raise ValueError(f"compute_fans needs a weight with at least 2 dimensions (out, in, ...), got shape {shape}")
    receptive = math.prod(shape[2:])
    return shape[1] * receptive, shape[0] * receptive


def truncated_normal_(tensor: torch.Tensor, stddev: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Haiku ``TruncatedNormal(stddev)``: fill ``tensor`` from N(0, stddev^2) truncated to +-2 stddev.

    ``stddev`` is the pre-truncation standard deviation; the realised one is ``0.8796 * stddev``.
    (``torch.nn.init.trunc_normal_`` takes *absolute* bounds, hence ``a=-2 stddev, b=2 stddev``.)
    """
    if not (stddev > 0 and math.isfinite(stddev)):
        raise ValueError(f"stddev must be a positive finite number, got {stddev!r}")
    return nn.init.trunc_normal_(tensor, mean=0.0, std=stddev, a=-2.0 * stddev, b=2.0 * stddev, generator=generator)


def variance_scaling_(
    tensor: torch.Tensor, scale: float, mode: str = "fan_in", generator: torch.Generator | None = None
) -> torch.Tensor:
    """JAX/Haiku ``VarianceScaling(scale, mode, "truncated_normal")`` on a PyTorch-layout weight.

    Draws a normal truncated at +-2 pre-truncation standard deviations with pre-truncation std
    ``sqrt(scale / n) / 0.8796``, where ``n`` is ``fan_in``, ``fan_out`` or their average (``mode``), so that
    the realised std is ``sqrt(scale / n)``.
    """
    fan_in, fan_out = compute_fans(tensor.shape)
    fans = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}
    if mode not in fans:
        raise ValueError(f"mode must be one of {sorted(fans)}, got {mode!r}")
    if not (scale > 0 and math.isfinite(scale)):
        raise ValueError(f"scale must be a positive finite number, got {scale!r}")
    stddev = math.sqrt(scale / fans[mode]) / TRUNCATED_NORMAL_STD_FACTOR
    return truncated_normal_(tensor, stddev, generator)


def glorot_normal_(tensor: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """JAX ``glorot_normal``: truncated normal with realised std ``sqrt(2 / (fan_in + fan_out))``."""
    return variance_scaling_(tensor, 1.0, "fan_avg", generator)


def make_generator(seed: int | None = None, generator: torch.Generator | None = None) -> torch.Generator | None:
    """The generator a model draws its weights from: ``generator``, or a fresh CPU one seeded with ``seed``.

    Returns ``None`` (PyTorch's global generator) when neither is given. Giving both is an error, since it
    is ambiguous which one should win.
    """
    if seed is not None and generator is not None:
        raise ValueError("give either seed or generator, not both")
    if generator is not None:
        if not isinstance(generator, torch.Generator):
            raise ValueError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        if generator.device.type != "cpu":
            raise ValueError("generator must be a CPU torch.Generator (weights are drawn on the CPU; move the model)")
        return generator
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an int, got {seed!r}")
    return torch.Generator().manual_seed(seed)


def _check_positive_int(name: str, value: object, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def count_parameters(model: nn.Module) -> int:
    """Total number of scalar parameters of ``model`` (all parameters; every one of them is trained)."""
    return sum(p.numel() for p in model.parameters())


# ----------------------------------------------------------------------------------------------------------
# MLP (MNIST)
# ----------------------------------------------------------------------------------------------------------


class MLP(nn.Module):
    """Fully connected ReLU network of the MNIST experiment (official ``image_classification.py``).

    ``depth`` counts Dense layers: Flatten -> Dense(width) -> ReLU -> ... -> Dense(n_out), i.e. ``depth - 1``
    hidden layers, each with its own weights (the official code after its shared-weight fix). Kernels are JAX
    ``glorot_normal``, biases zero, no normalisation. Defaults give 2,797,010 parameters.

    The input may be images ``(N, 1, 28, 28)`` or flat vectors ``(N, 784)``: everything after the batch axis
    is flattened and must have ``in_dim`` entries. The output is the logits ``(N, n_out)``.
    """

    def __init__(
        self,
        in_dim: int = 784,
        depth: int = 4,
        width: int = 1000,
        n_out: int = 10,
        *,
        seed: int | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        for name, value in (("in_dim", in_dim), ("depth", depth), ("width", width), ("n_out", n_out)):
            _check_positive_int(name, value)
        self.in_dim, self.depth, self.width, self.n_out = in_dim, depth, width, n_out
        dims = [in_dim] + [width] * (depth - 1) + [n_out]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:], strict=True))
        self.reset_parameters(make_generator(seed, generator))

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Glorot-normal kernels (in layer order), zero biases."""
        with torch.no_grad():
            for layer in self.layers:
                glorot_normal_(layer.weight, generator)
                layer.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, n_out)`` for inputs ``(N, ...)`` with ``in_dim`` entries per example."""
        if x.dim() < 2 or x.shape[1:].numel() != self.in_dim:
            raise ValueError(
                f"MLP expects inputs of shape (N, {self.in_dim}) or (N, ...) with {self.in_dim} entries per "
                f"example (e.g. (N, 1, 28, 28)), got {tuple(x.shape)}"
            )
        h = x.reshape(x.shape[0], self.in_dim)
        for layer in self.layers[:-1]:
            h = F.relu(layer(h))
        return self.layers[-1](h)


# ----------------------------------------------------------------------------------------------------------
# CNN (CIFAR-10)
# ----------------------------------------------------------------------------------------------------------


class ChannelLayerNorm(nn.Module):
    """Flax ``nn.LayerNorm()`` on an NCHW tensor: normalise over the channel axis only, at each (n, h, w).

    ``y = (x - mean_c) / sqrt(var_c + eps) * scale + bias`` with the biased variance, learnable ``scale``
    (ones) and ``bias`` (zeros) of shape ``(C,)``. Implemented by permuting to NHWC and calling
    ``F.layer_norm``, which has both double-backward and forward-mode derivatives.
    """

    def __init__(self, num_channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        _check_positive_int("num_channels", num_channels)
        if not (eps > 0):
            raise ValueError(f"eps must be > 0, got {eps!r}")
        self.num_channels, self.eps = num_channels, eps
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise ``x`` of shape ``(N, C, H, W)`` over ``C``; returns the same shape (NCHW)."""
        if x.dim() != 4 or x.shape[1] != self.num_channels:
            raise ValueError(f"ChannelLayerNorm expects (N, {self.num_channels}, H, W), got {tuple(x.shape)}")
        y = F.layer_norm(x.permute(0, 2, 3, 1), (self.num_channels,), self.weight, self.bias, self.eps)
        return y.permute(0, 3, 1, 2)


class CNN(nn.Module):
    """The convolutional network of the CIFAR-10 experiment (official ``image_classification.py``).

    Block ``i`` (``i = 0 .. num_blocks-1``) has ``feature_multiplier * 2**i`` channels and consists of
    ``layers_per_block`` times [Conv 3x3, stride 1, SAME padding, bias -> ReLU -> LayerNorm over channels
    (eps 1e-6, affine)], followed by MaxPool 2x2 stride 2 (VALID). The final feature map is flattened in
    **NHWC** order (as the Flax original) and fed to Dense ``n_out``. Kernels are JAX ``glorot_normal`` with
    the receptive field in the fans; biases zero. Defaults (32x32x3 input) give 25,674 parameters.

    Input: ``(N, in_channels, image_size, image_size)`` float (NCHW). Output: logits ``(N, n_out)``.
    """

    def __init__(
        self,
        in_channels: int = 3,
        num_blocks: int = 2,
        layers_per_block: int = 1,
        feature_multiplier: int = 16,
        n_out: int = 10,
        image_size: int = 32,
        ln_eps: float = 1e-6,
        *,
        seed: int | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        for name, value in (
            ("in_channels", in_channels),
            ("num_blocks", num_blocks),
            ("layers_per_block", layers_per_block),
            ("feature_multiplier", feature_multiplier),
            ("n_out", n_out),
            ("image_size", image_size),
        ):
            _check_positive_int(name, value)
        final_size = image_size // 2**num_blocks
        if final_size < 1:
            raise ValueError(
                f"image_size={image_size} is too small for num_blocks={num_blocks} 2x2 max-pools "
                f"(need image_size >= {2**num_blocks})"
            )
        self.in_channels, self.image_size, self.n_out = in_channels, image_size, n_out
        self.convs = nn.ModuleList()
        self.norms = nn.ModuleList()
        self.block_of_layer: list[int] = []
        channels = in_channels
        for block in range(num_blocks):
            out = feature_multiplier * 2**block
            for _ in range(layers_per_block):
                self.convs.append(nn.Conv2d(channels, out, kernel_size=3, stride=1, padding=1, bias=True))
                self.norms.append(ChannelLayerNorm(out, eps=ln_eps))
                self.block_of_layer.append(block)
                channels = out
        self.num_blocks, self.layers_per_block = num_blocks, layers_per_block
        self.final_shape_nhwc = (final_size, final_size, channels)
        self.head = nn.Linear(final_size * final_size * channels, n_out)
        self.reset_parameters(make_generator(seed, generator))

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Glorot-normal conv kernels (in layer order), then the head; zero biases; LayerNorms 1 and 0."""
        with torch.no_grad():
            for conv, norm in zip(self.convs, self.norms, strict=True):
                glorot_normal_(conv.weight, generator)
                conv.bias.zero_()
                norm.weight.fill_(1.0)
                norm.bias.zero_()
            glorot_normal_(self.head.weight, generator)
            self.head.bias.zero_()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The last feature map, NCHW ``(N, C, H, W)``, before flattening."""
        expected = (self.in_channels, self.image_size, self.image_size)
        if x.dim() != 4 or tuple(x.shape[1:]) != expected:
            raise ValueError(
                f"CNN expects NCHW inputs of shape (N, {', '.join(map(str, expected))}), "
                f"got {tuple(x.shape)}; "
                "NHWC images must be permuted with x.permute(0, 3, 1, 2)"
            )
        h = x
        for i, (conv, norm) in enumerate(zip(self.convs, self.norms, strict=True)):
            h = norm(F.relu(conv(h)))
            last_of_block = i + 1 == len(self.convs) or self.block_of_layer[i + 1] != self.block_of_layer[i]
            if last_of_block:
                h = F.max_pool2d(h, kernel_size=2, stride=2)
        return h

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, n_out)``; the features are flattened in NHWC order, as in the Flax original."""
        h = self.features(x)
        return self.head(h.permute(0, 2, 3, 1).flatten(1))


# ----------------------------------------------------------------------------------------------------------
# Character Transformer (tiny_shakespeare)
# ----------------------------------------------------------------------------------------------------------


class MultiHeadAttention(nn.Module):
    """Haiku ``MultiHeadAttention`` (self-attention form) with an explicit softmax.

    q/k/v projections ``d_model -> num_heads * key_size`` with bias (value size = key size), logits scaled by
    ``1/sqrt(key_size)``, masked logits set to ``-1e30`` (as Haiku; a fully masked row becomes uniform rather
    than NaN), output projection ``num_heads * key_size -> d_model`` with bias. Written as plain
    ``matmul + softmax`` because fused attention kernels have neither double-backward nor forward-mode AD.
    The official initialisers are applied by :meth:`CharTransformer.reset_parameters` (a standalone instance
    keeps PyTorch's defaults).
    """

    def __init__(self, d_model: int, num_heads: int, key_size: int) -> None:
        super().__init__()
        self.num_heads, self.key_size = num_heads, key_size
        inner = num_heads * key_size
        self.query = nn.Linear(d_model, inner)
        self.key = nn.Linear(d_model, inner)
        self.value = nn.Linear(d_model, inner)
        self.output = nn.Linear(inner, d_model)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Self-attention on ``x`` ``(B, T, d_model)``; ``mask`` (bool, broadcasts to ``(B, H, T, T)``)."""
        B, T, _ = x.shape
        H, K = self.num_heads, self.key_size
        q = self.query(x).view(B, T, H, K).transpose(1, 2)  # (B, H, T, K)
        k = self.key(x).view(B, T, H, K).transpose(1, 2)
        v = self.value(x).view(B, T, H, K).transpose(1, 2)
        logits = torch.matmul(q, k.transpose(-2, -1)) / math.sqrt(K)  # (B, H, Tq, Tk)
        if mask is not None:
            logits = logits.masked_fill(~mask, MASKED_LOGIT)
        weights = torch.softmax(logits, dim=-1)
        attended = torch.matmul(weights, v).transpose(1, 2).reshape(B, T, H * K)
        return self.output(attended)


class TransformerBlock(nn.Module):
    """One pre-LayerNorm block: ``h += MHA(LN(h))``, then ``h += W2 gelu_tanh(W1 LN(h) + b1) + b2``.

    Initialised by :meth:`CharTransformer.reset_parameters`.
    """

    def __init__(self, d_model: int, num_heads: int, key_size: int, widening_factor: int, ln_eps: float) -> None:
        super().__init__()
        self.ln_attention = nn.LayerNorm(d_model, eps=ln_eps)
        self.attention = MultiHeadAttention(d_model, num_heads, key_size)
        self.ln_mlp = nn.LayerNorm(d_model, eps=ln_eps)
        self.fc1 = nn.Linear(d_model, widening_factor * d_model)
        self.fc2 = nn.Linear(widening_factor * d_model, d_model)

    def forward(self, h: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Apply the block to ``h`` ``(B, T, d_model)``."""
        h = h + self.attention(self.ln_attention(h), mask)
        return h + self.fc2(F.gelu(self.fc1(self.ln_mlp(h)), approximate="tanh"))


class CharTransformer(nn.Module):
    """The character-level decoder-only Transformer of the tiny_shakespeare experiment (``transformer_model.py``).

    Token embedding ``vocab_size x d_model`` plus learned positional embedding ``seq_len x d_model`` (both
    Haiku ``TruncatedNormal(0.02)``), ``num_layers`` pre-LN blocks (:class:`TransformerBlock`), a final
    LayerNorm (eps ``ln_eps``, scale 1, offset 0) and an untied output Linear ``d_model -> vocab_size``.
    Attention and MLP kernels are Haiku ``VarianceScaling(2 / num_layers)`` (fan_in, truncated); the head is
    Haiku's default ``TruncatedNormal(1/sqrt(d_model))``; biases zero. No dropout. Defaults give 1,626,496
    parameters.

    The attention mask is causal x input mask, with the input mask ``tokens != pad_token`` on the *keys*, as
    in the Haiku example (``pad_token=None`` disables it). Input: ``LongTensor (B, T)`` with ``T <= seq_len``
    and values in ``[0, vocab_size)``; output: logits ``(B, T, vocab_size)``.
    """

    def __init__(
        self,
        vocab_size: int = 128,
        seq_len: int = 64,
        d_model: int = 128,
        num_layers: int = 6,
        num_heads: int = 8,
        key_size: int = 32,
        widening_factor: int = 4,
        ln_eps: float = 1e-5,
        pad_token: int | None = 0,
        *,
        seed: int | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        for name, value in (
            ("vocab_size", vocab_size),
            ("seq_len", seq_len),
            ("d_model", d_model),
            ("num_layers", num_layers),
            ("num_heads", num_heads),
            ("key_size", key_size),
            ("widening_factor", widening_factor),
        ):
            _check_positive_int(name, value)
        if not (ln_eps > 0):
            raise ValueError(f"ln_eps must be > 0, got {ln_eps!r}")
        if pad_token is not None and (
            isinstance(pad_token, bool) or not isinstance(pad_token, int) or not 0 <= pad_token < vocab_size
        ):
            raise ValueError(f"pad_token must be None or an int in [0, {vocab_size}), got {pad_token!r}")
        self.vocab_size, self.seq_len, self.d_model = vocab_size, seq_len, d_model
        self.num_layers, self.pad_token = num_layers, pad_token
        self.token_embedding = nn.Embedding(vocab_size, d_model)
        self.positional_embedding = nn.Parameter(torch.empty(seq_len, d_model))
        self.blocks = nn.ModuleList(
            TransformerBlock(d_model, num_heads, key_size, widening_factor, ln_eps) for _ in range(num_layers)
        )
        self.ln_final = nn.LayerNorm(d_model, eps=ln_eps)
        self.head = nn.Linear(d_model, vocab_size)
        self.register_buffer("causal_mask", torch.ones(seq_len, seq_len, dtype=torch.bool).tril(), persistent=False)
        self.reset_parameters(make_generator(seed, generator))

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """The Haiku initialisers, drawn in ``named_parameters()`` order; LayerNorms scale 1, offset 0."""
        scale = 2.0 / self.num_layers
        with torch.no_grad():
            for name, p in self.named_parameters():
                if name in ("token_embedding.weight", "positional_embedding"):
                    truncated_normal_(p, 0.02, generator)
                elif name == "head.weight":
                    truncated_normal_(p, 1.0 / math.sqrt(self.d_model), generator)
                elif ".ln_" in name or name.startswith("ln_"):
                    p.fill_(1.0 if name.endswith("weight") else 0.0)
                elif name.endswith(".bias"):
                    p.zero_()
                elif name.endswith(".weight"):  # attention q/k/v/output and MLP fc1/fc2 kernels
                    variance_scaling_(p, scale, "fan_in", generator)
                else:  # pragma: no cover - guards against a parameter added without an initialiser
                    raise RuntimeError(f"no initialiser for parameter {name}")

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, T, vocab_size)`` for token ids ``(B, T)``; position ``t`` sees tokens ``0..t``."""
        if tokens.dim() != 2 or tokens.dtype not in (torch.int64, torch.int32):
            raise ValueError(
                f"CharTransformer expects integer token ids of shape (B, T), got dtype {tokens.dtype} "
                f"and shape {tuple(tokens.shape)}"
            )
        B, T = tokens.shape
        if not 1 <= T <= self.seq_len:
            raise ValueError(f"sequence length T={T} must be between 1 and seq_len={self.seq_len}")
        if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= self.vocab_size):
            raise ValueError(
                f"token ids must lie in [0, {self.vocab_size}), got range [{int(tokens.min())}, {int(tokens.max())}]"
            )
        h = self.token_embedding(tokens) + self.positional_embedding[:T]
        mask = self.causal_mask[:T, :T].view(1, 1, T, T)
        if self.pad_token is not None:
            mask = mask & (tokens != self.pad_token).view(B, 1, 1, T)
        for block in self.blocks:
            h = block(h, mask)
        return self.head(self.ln_final(h))


# ----------------------------------------------------------------------------------------------------------
# Factory
# ----------------------------------------------------------------------------------------------------------

#: The model class of each task of the paper.
MODEL_FOR_TASK: dict[str, type[nn.Module]] = {"mnist": MLP, "cifar10": CNN, "shakespeare": CharTransformer}


def make_model(task: str, **overrides: object) -> nn.Module:
    """The official model for ``task`` (``"mnist"``, ``"cifar10"`` or ``"shakespeare"``), with overrides.

    ``overrides`` go to the constructor (e.g. ``make_model("mnist", width=512, seed=0)``); an unknown name is
    a :class:`ValueError` listing the accepted ones.
    """
    if task not in MODEL_FOR_TASK:
        raise ValueError(f"unknown task {task!r}; choose one of: {', '.join(repr(t) for t in MODEL_FOR_TASK)}")
    cls = MODEL_FOR_TASK[task]
    accepted = [n for n in inspect.signature(cls.__init__).parameters if n != "self"]
    unknown = sorted(set(overrides) - set(accepted))
    if unknown:
        raise ValueError(
            f"{cls.__name__} (task {task!r}) does not take {', '.join(unknown)}; accepted: {', '.join(accepted)}"
        )
    return cls(**overrides)


__all__ = [
    "CNN",
    "MASKED_LOGIT",
    "MLP",
    "MODEL_FOR_TASK",
    "TRUNCATED_NORMAL_STD_FACTOR",
    "ChannelLayerNorm",
    "CharTransformer",
    "MultiHeadAttention",
    "TransformerBlock",
    "compute_fans",
    "count_parameters",
    "glorot_normal_",
    "make_generator",
    "make_model",
    "truncated_normal_",
    "variance_scaling_",
]
