import pytest
import torch

from lightning_search.sampling import noise_seed, seeded_noise


def test_seeds_are_distinct_and_stable():
    seeds = {noise_seed(0, i, r, c) for i in range(50) for r in range(3) for c in range(8)}
    assert len(seeds) == 50 * 3 * 8
    assert noise_seed(0, 7, 1, 2) == noise_seed(0, 7, 1, 2)
    assert noise_seed(0, 7, 1, 2) != noise_seed(1, 7, 1, 2)
    assert all(0 <= s < 2**63 for s in seeds)


def test_noise_does_not_depend_on_batch_composition():
    seeds = [noise_seed(0, i) for i in range(6)]
    together = seeded_noise(seeds, (1, 4, 4))
    apart = torch.cat([seeded_noise([s], (1, 4, 4)) for s in reversed(seeds)]).flip(0)
    torch.testing.assert_close(together, apart, rtol=0, atol=0)
    expected = torch.randn((1, 4, 4), generator=torch.Generator().manual_seed(seeds[3]))
    torch.testing.assert_close(together[3], expected, rtol=0, atol=0)


def _splitmix(x: int) -> int:
    mask = (1 << 64) - 1
    x = (x + 0x9E3779B97F4A7C15) & mask
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & mask
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & mask
    return x ^ (x >> 31)


def test_step_noise_is_splitmix_and_box_muller_written_out():
    """The vectorised counter-based generator against the same arithmetic in plain Python integers."""
    import math
    import random

    from lightning_search.sampling.noise import step_noise, step_seed, step_seeds

    rows = [random.Random(0).getrandbits(63) for _ in range(3)] + [0, 2**63 - 1]
    assert step_seeds(rows, 0.4375).tolist() == [step_seed(r, 0.4375) for r in rows]
    z = step_noise(rows, 0.4375, (2, 3), dtype=torch.float64)
    for i, r in enumerate(rows):
        base = _splitmix(step_seed(r, 0.4375))
        for j in range(6):
            u1 = ((_splitmix(base ^ (2 * j)) >> 11) + 1) / 2.0**53
            u2 = (_splitmix(base ^ (2 * j + 1)) >> 11) / 2.0**53
            assert z[i].flatten()[j].item() == pytest.approx(
                math.sqrt(-2 * math.log(u1)) * math.cos(2 * math.pi * u2), abs=1e-12
            )


def test_step_noise_is_standard_normal_and_independent_of_the_batch():
    from scipy import stats

    from lightning_search.sampling.noise import step_noise

    rows = list(range(5000))
    z = step_noise(rows, 0.5, (1, 4, 4))
    assert stats.kstest(z.flatten().numpy(), "norm").pvalue > 1e-3
    flat = z.flatten(1)
    corr = torch.corrcoef(flat.T) - torch.eye(16)
    assert corr.abs().max() < 0.06  # elements of a draw are uncorrelated
    assert (step_noise(rows, 0.5 + 1e-6, (1, 4, 4)) - z).abs().mean() > 0.5  # another step, other noise
    torch.testing.assert_close(step_noise(rows[7:9], 0.5, (1, 4, 4)), z[7:9], rtol=0, atol=0)
