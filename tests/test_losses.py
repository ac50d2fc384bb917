"""The loss terms as plain functions."""

import pytest
import torch

from hf_privacy_backdoor.losses import (
    embedding_distance,
    grouped_backdoor_loss,
    lora_weight_distance,
    weight_distance,
)


def test_embedding_distance():
    a = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    assert embedding_distance(a, a).item() == pytest.approx(-1.0)
    assert embedding_distance(a, -a).item() == pytest.approx(1.0)
    assert embedding_distance(a, torch.tensor([1.0, 0.0])).item() == pytest.approx(-0.5)  # broadcast target
    assert embedding_distance(a, a * 3, "mse").item() == pytest.approx(((2 * a) ** 2).mean().item())
    with pytest.raises(ValueError, match="unknown distance"):
        embedding_distance(a, a, "l1")


def test_weight_distance_is_plain_l2_norm_with_zero_gradient_at_start():
    w = torch.zeros(2, 2, requires_grad=True)
    d = weight_distance([(w, torch.zeros(2, 2))])
    d.backward()
    assert d.item() == 0 and torch.equal(w.grad, torch.zeros(2, 2))
    d = weight_distance([(torch.full((2, 2), 1.0), torch.zeros(2, 2)), (torch.tensor([3.0]), torch.tensor([-1.0]))])
    assert d.item() == pytest.approx(2.0 + 4.0)  # ||ones(2,2)|| = 2, not squared


def test_lora_weight_distance_equals_merged_delta_norm():
    torch.manual_seed(0)
    a, b = torch.randn(4, 16), torch.randn(8, 4)
    scale = 0.5
    base = torch.randn(8, 16)
    merged = base + scale * b @ a  # what merging the adapter into the base weight gives
    expected = torch.linalg.matrix_norm(merged - base)
    assert lora_weight_distance([(a, b, scale)]).item() == pytest.approx(expected.item(), rel=1e-5)
    # several modules: the plain sum of their norms, like weight_distance
    a2, b2 = torch.randn(2, 6), torch.randn(3, 2)
    two = lora_weight_distance([(a, b, scale), (a2, b2, 2.0)])
    assert two.item() == pytest.approx(expected.item() + torch.linalg.matrix_norm(2.0 * b2 @ a2).item(), rel=1e-5)
    with pytest.raises(ValueError, match="at least one"):
        lora_weight_distance([])


def test_grouped_backdoor_is_mean_over_people():
    target = torch.tensor([1.0, 0.0])
    emb = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    # person A: 3 perfect triggers (-1); person B: one orthogonal (0) -> mean over people -0.5, not -0.75
    assert grouped_backdoor_loss(emb, ["A", "A", "A", "B"], target).item() == pytest.approx(-0.5)
