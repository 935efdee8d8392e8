"""Tests of samedge_lib.engine.losses against hand computations and torch's own cross-entropy."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from samedge_lib.engine.losses import (
    LOSSES,
    get_loss,
    squared_error_half_sum,
    squared_error_mean,
    token_cross_entropy,
)


def test_squared_error_mean_by_hand() -> None:
    logits = torch.tensor([[1.0, 0.0, 2.0], [0.5, -1.0, 0.0]])
    onehot = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    # squared residuals: 0, 0, 4 | 0.25, 1, 1  -> sum 6.25 over 6 entries
    assert squared_error_mean(logits, onehot).item() == pytest.approx(6.25 / 6)
    # 1/2 sum over classes, mean over the 2 examples: (4/2 + 2.25/2) / 2
    assert squared_error_half_sum(logits, onehot).item() == pytest.approx((2.0 + 1.125) / 2)


def test_integer_labels_equal_one_hot_rows() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(7, 10, generator=g)
    labels = torch.randint(0, 10, (7,), generator=g)
    onehot = F.one_hot(labels, 10).float()
    for loss in (squared_error_mean, squared_error_half_sum):
        assert torch.equal(loss(logits, labels), loss(logits, onehot))


def test_half_sum_is_num_classes_over_two_times_mean_in_value_gradient_and_hessian() -> None:
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(6, 10, generator=g, dtype=torch.float64)
    y = F.one_hot(torch.randint(0, 10, (6,), generator=g), 10).double()
    ratio = squared_error_half_sum(logits, y) / squared_error_mean(logits, y)
    assert ratio.item() == pytest.approx(5.0, rel=1e-12)
    # Hessians with respect to the outputs: (2 / (10 N)) I and (1 / N) I, so every eigenvalue scales by 5.
    h_mean = torch.autograd.functional.hessian(lambda f: squared_error_mean(f, y), logits).reshape(60, 60)
    h_half = torch.autograd.functional.hessian(lambda f: squared_error_half_sum(f, y), logits).reshape(60, 60)
    torch.testing.assert_close(h_mean, torch.eye(60, dtype=torch.float64) * 2 / 60)
    torch.testing.assert_close(h_half, 5 * h_mean)
    # With 3 classes the factor is 3/2.
    assert (squared_error_half_sum(logits[:, :3], y[:, :3]) / squared_error_mean(logits[:, :3], y[:, :3])).item() == (
        pytest.approx(1.5)
    )


def test_squared_error_rejects_mismatched_targets() -> None:
    logits = torch.zeros(4, 10)
    with pytest.raises(ValueError, match="one-hot"):
        squared_error_mean(logits, torch.zeros(4, 9))
    with pytest.raises(ValueError, match="integer labels"):
        squared_error_mean(logits, torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\[0, 10\)"):
        squared_error_mean(logits, torch.tensor([0, 1, 2, 10]))
    with pytest.raises(ValueError, match=r"\(N, num_classes\)"):
        squared_error_half_sum(torch.zeros(4, 2, 5), torch.zeros(4, 2, 5))


def test_token_cross_entropy_equals_torch_cross_entropy() -> None:
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(3, 5, 13, generator=g, dtype=torch.float64)
    targets = torch.randint(1, 13, (3, 5), generator=g)
    expected = F.cross_entropy(logits.reshape(-1, 13), targets.reshape(-1))
    torch.testing.assert_close(token_cross_entropy(logits, targets), expected)
    torch.testing.assert_close(token_cross_entropy(logits, targets, pad_token=None), expected)


def test_token_cross_entropy_by_hand() -> None:
    logits = torch.tensor([[[0.0, 0.0], [2.0, 0.0]]])  # two tokens, vocabulary 2
    targets = torch.tensor([[1, 1]])
    nll = [torch.log(torch.tensor(2.0)), torch.log1p(torch.exp(torch.tensor(2.0)))]
    assert token_cross_entropy(logits, targets, pad_token=None).item() == pytest.approx(float(sum(nll)) / 2)


def test_token_cross_entropy_masks() -> None:
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 4, 6, generator=g)
    targets = torch.tensor([[1, 0, 2, 3], [0, 5, 5, 1]])
    inputs = torch.tensor([[0, 1, 0, 2], [3, 0, 5, 5]])
    # Default: mask on targets, like F.cross_entropy's ignore_index.
    expected = F.cross_entropy(logits.reshape(-1, 6), targets.reshape(-1), ignore_index=0)
    torch.testing.assert_close(token_cross_entropy(logits, targets), expected)
    # Official (Haiku example): mask on the inputs.
    keep = (inputs != 0).reshape(-1)
    per_token = F.cross_entropy(logits.reshape(-1, 6), targets.reshape(-1), reduction="none")
    torch.testing.assert_close(token_cross_entropy(logits, targets, inputs=inputs), per_token[keep].mean())
    with pytest.raises(ValueError, match="pad token"):
        token_cross_entropy(logits, torch.zeros(2, 4, dtype=torch.long))


def test_token_cross_entropy_rejects_bad_shapes() -> None:
    logits = torch.zeros(2, 4, 6)
    with pytest.raises(ValueError, match=r"\(2, 4\)"):
        token_cross_entropy(logits, torch.zeros(2, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="integer ids"):
        token_cross_entropy(logits, torch.zeros(2, 4))
    with pytest.raises(ValueError, match=r"\[0, 6\)"):
        token_cross_entropy(logits, torch.full((2, 4), 6))
    with pytest.raises(ValueError, match="inputs"):
        token_cross_entropy(logits, torch.ones(2, 4, dtype=torch.long), inputs=torch.ones(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\(B, T, V\)"):
        token_cross_entropy(torch.zeros(8, 6), torch.ones(8, dtype=torch.long))


def test_registry() -> None:
    assert get_loss("mse_mean") is squared_error_mean
    assert get_loss("mse_half_sum") is squared_error_half_sum
    assert get_loss("cross_entropy") is token_cross_entropy
    assert list(LOSSES) == ["mse_mean", "mse_half_sum", "cross_entropy"]
    with pytest.raises(ValueError, match="'mse_mean', 'mse_half_sum', 'cross_entropy'"):
        get_loss("mse")
