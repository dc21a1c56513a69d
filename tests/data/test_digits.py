import numpy as np
import pytest

from lightning_search.data import DigitsDataModule, digits_splits, reference_images
from lightning_search.errors import ConfigurationError


def test_fixed_disjoint_stratified_splits():
    splits = digits_splits()
    assert len(splits["held_out"][1]) == 500
    assert len(splits["generator"][1]) == 1797 - 500
    assert len(splits["verifier"][1]) + len(splits["evaluator"][1]) == 1297
    rows = {name: {arr.tobytes() for arr in images} for name, (images, _) in splits.items()}
    assert not rows["verifier"] & rows["evaluator"]
    assert not rows["held_out"] & rows["generator"]
    assert rows["verifier"] | rows["evaluator"] == rows["generator"]
    for _, labels in splits.values():
        counts = np.bincount(labels, minlength=10)
        assert counts.min() >= 0.8 * counts.mean()  # stratified: every class present in proportion
    images = reference_images()
    assert images.shape == (500, 1, 8, 8) and 0 <= images.min() and images.max() <= 1


def test_training_batches_and_prediction_ids():
    dm = DigitsDataModule("verifier", batch_size=32, samples_per_class=3, classes=[2, 7], predict_batch_size=4)
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (32, 1, 8, 8) and batch["condition"].shape == (32,)
    rows = [r for b in dm.predict_dataloader() for r in zip(b["sample_id"].tolist(), b["condition"])]
    assert rows == [(6, 2), (7, 2), (8, 2), (21, 7), (22, 7), (23, 7)]
    dm.skip_samples({7, 22})  # the resume step: the batches keep their rows (a smaller one scores other last bits)
    batches = [(b["sample_id"].tolist(), b["done"]) for b in dm.predict_dataloader()]
    assert batches == [([6, 7, 8, 21], [False, True, False, False]), ([22, 23], [True, False])]


def test_unknown_split_is_rejected():
    with pytest.raises(ConfigurationError, match="generator, verifier, evaluator"):
        DigitsDataModule("test")
