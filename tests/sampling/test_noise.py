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
