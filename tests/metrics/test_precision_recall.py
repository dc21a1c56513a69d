import torch

from lightning_search.metrics import precision_recall


def brute_force(real, fake, k):
    def radius(points, i):
        d = sorted(float((points[i] - points[j]).norm()) for j in range(len(points)) if j != i)
        return d[k - 1]

    real_r = [radius(real, i) for i in range(len(real))]
    fake_r = [radius(fake, i) for i in range(len(fake))]
    precision = sum(any(float((f - r).norm()) <= real_r[j] for j, r in enumerate(real)) for f in fake) / len(fake)
    recall = sum(any(float((r - f).norm()) <= fake_r[j] for j, f in enumerate(fake)) for r in real) / len(real)
    return precision, recall


def test_matches_a_brute_force_loop():
    gen = torch.Generator().manual_seed(0)
    real = torch.randn(40, 3, generator=gen)
    fake = 0.5 * torch.randn(30, 3, generator=gen) + 0.8  # narrower and shifted: precision != recall
    p, r = precision_recall(real, fake, k=3)
    bp, br = brute_force(real.double(), fake.double(), 3)
    assert (p, r) == (bp, br)
    assert r < 0.9


def test_identical_sets_are_perfect():
    x = torch.randn(25, 4, generator=torch.Generator().manual_seed(1))
    assert precision_recall(x, x.clone(), k=3) == (1.0, 1.0)
