import pytest
import torch

from lightning_search.backbones import DIGITS_SIZES, DigitsBackbone
from lightning_search.errors import UnknownNameError


def test_unknown_size_lists_the_valid_ones():
    with pytest.raises(UnknownNameError) as info:
        DigitsBackbone("digits-xxl")
    for name in DIGITS_SIZES:
        assert name in str(info.value)


@pytest.mark.parametrize(
    "size,low,high", [("digits-s", 40_000, 120_000), ("digits-m", 250_000, 400_000), ("digits-l", 500_000, 1_500_000)]
)
def test_named_sizes(size, low, high):
    assert low < sum(p.numel() for p in DigitsBackbone(size).parameters()) < high


def test_shapes_conditions_and_decode():
    b = DigitsBackbone("digits-xs").eval()
    cond = b.encode_conditions([0, 3, 9])
    assert b.null_conditions(cond).tolist() == [10, 10, 10]
    out = b(torch.randn(3, 1, 8, 8), torch.rand(3), cond)
    assert out.shape == (3, 1, 8, 8)
    images = b.decode(torch.tensor([-3.0, -1.0, 0.0, 1.0, 3.0]).view(5, 1, 1, 1))
    assert images.flatten().tolist() == [0.0, 0.0, 0.5, 1.0, 1.0]
    torch.testing.assert_close(b.encode_images(b.decode(torch.full((1, 1, 8, 8), 0.3))), torch.full((1, 1, 8, 8), 0.3))
    with pytest.raises(ValueError, match="0..9"):
        b.encode_conditions([10])


def test_condition_dropout_uses_the_null_label():
    b = DigitsBackbone("digits-xs", label_dropout=0.5)
    dropped = b.drop_conditions(b.encode_conditions([1] * 4000), torch.Generator().manual_seed(0))
    share = (dropped == 10).float().mean().item()
    assert 0.45 < share < 0.55
    assert set(dropped.tolist()) == {1, 10}
