import pytest
import torch

from lightning_search.classifier import load_classifier
from lightning_search.data import digits_splits, reference_images
from lightning_search.metrics import SampleQuality


@pytest.fixture(scope="module")
def evaluator(digits_setup):
    return load_classifier(digits_setup.evaluator)


def test_real_data_scores_near_perfect_and_noise_scores_badly(evaluator):
    images, labels = digits_splits()["generator"]
    real = SampleQuality(evaluator, reference_images())
    real.update(torch.from_numpy(images[:500]), labels[:500].tolist())
    good = real.compute()
    noise = SampleQuality(evaluator, reference_images())
    noise.update(torch.rand(500, 1, 8, 8, generator=torch.Generator().manual_seed(0)), labels[:500].tolist())
    bad = noise.compute()
    assert good["fid"] < bad["fid"] / 5
    # the session's evaluator trains 15 epochs only (0.80 +- 0.01 on real digits, depending on its seeded draws)
    assert good["accuracy"] > 0.75 > 0.3 > bad["accuracy"]
    assert good["recall"] > bad["recall"] and good["precision"] > bad["precision"]
    assert good["num_samples"] == 500


def test_accuracy_and_inception_score_by_hand(evaluator):
    images, labels = digits_splits()["held_out"]
    x = torch.from_numpy(images[:200])
    quality = SampleQuality(evaluator, reference_images())
    quality.update(x, labels[:200].tolist())
    out = quality.compute()
    with torch.no_grad():
        p = evaluator(x).softmax(1).double()
    marginal = p.mean(0)
    inception = torch.exp((p * (p.log() - marginal.log())).sum(1).mean()).item()
    accuracy = (p.argmax(1) == torch.from_numpy(labels[:200])).double().mean().item()
    assert out["inception_score"] == pytest.approx(inception, rel=1e-4)
    assert out["accuracy"] == pytest.approx(accuracy)
    assert out["fid"] >= 0


def test_same_images_give_the_same_kid(evaluator):
    images, labels = digits_splits()["generator"]
    values = []
    for _ in range(2):
        quality = SampleQuality(evaluator, reference_images(), kid_subset_size=50)
        quality.update(torch.from_numpy(images[:300]), labels[:300].tolist())
        values.append(quality.compute()["kid"])
    assert values[0] == values[1]
