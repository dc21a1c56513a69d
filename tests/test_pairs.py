"""AI-feedback pairs (``lightning_search/pairs.py`` and ``lightning-search pairs``): best against worst of K
samples by a verifier, checked against a hand loop over the candidates; the command writes a Pick-a-Pic data
set that PreferenceDataModule reads and the DPO recipe fits on."""

from __future__ import annotations

import json

import pytest
import torch

from lightning_search.errors import ConfigurationError
from lightning_search.lora import ADAPTER_FILE
from lightning_search.pairs import PairsConfig, best_and_worst
from lightning_search.sampling import Sampler
from lightning_search.sampling.noise import noise_seed
from lightning_search.search.base import SearchContext
from lightning_search.verifiers import ClassifierVerifier
from tests.conftest import patched_recipe


def _by_hand(backbone, sampler, verifier, condition, sample_id, k, seed):
    """Each of the K candidates sampled alone from its own seeded noise, decoded and scored."""
    images, scores, seeds = [], [], []
    for c in range(k):
        s = noise_seed(seed, sample_id, 0, c)
        noise = torch.randn(backbone.latent_shape, generator=torch.Generator().manual_seed(s))[None]
        x = sampler.sample(backbone, noise, backbone.encode_conditions([condition])).x
        image = backbone.decode(x)
        images.append(image[0])
        scores.append(float(verifier(image, [condition])[0]))
        seeds.append(s)
    return images, scores, seeds


@torch.no_grad()
def test_pairs_are_the_best_and_worst_of_k_by_the_verifier(trained_backbone, digits_setup):
    verifier = ClassifierVerifier(str(digits_setup.verifier))
    sampler = Sampler("heun", 3)
    conditions, ids = [3, 7, 7, 1], [30, 70, 71, 10]
    rows = best_and_worst(SearchContext(trained_backbone, sampler, verifier, 5), conditions, ids, 4)
    assert [r["sample_id"] for r in rows] == ids
    for row, condition, sample_id in zip(rows, conditions, ids):
        images, scores, seeds = _by_hand(trained_backbone, sampler, verifier, condition, sample_id, 4, 5)
        best, worst = max(range(4), key=scores.__getitem__), min(range(4), key=scores.__getitem__)
        assert row["caption"] == condition and (row["seed_w"], row["seed_l"]) == (seeds[best], seeds[worst])
        assert row["score_w"] == pytest.approx(scores[best], abs=1e-4) and row["score_l"] < row["score_w"]
        torch.testing.assert_close(row["image_w"], images[best], atol=1e-5, rtol=0)
        torch.testing.assert_close(row["image_l"], images[worst], atol=1e-5, rtol=0)


def test_fewer_than_two_samples_per_condition_is_refused():
    with pytest.raises(ConfigurationError, match="samples_per_condition >= 2"):
        PairsConfig("classifier", samples_per_condition=1)


def test_pairs_command_writes_a_pickapic_set_that_dpo_fits_on(tmp_path, digits_setup):
    import datasets

    from lightning_search.cli import main
    from lightning_search.data import PreferenceDataModule

    recipe = patched_recipe("digits/pairs.yaml", tmp_path, digits_setup)
    main(["pairs", "--config", str(recipe), "--data.init_args.samples_per_class=3"])
    run = tmp_path / "runs/digits/pairs"
    data = datasets.load_from_disk(str(run / "pairs"))
    assert data.column_names == ["caption", "jpg_0", "jpg_1", "label_0", "score_0", "score_1", "seed_0", "seed_1"]
    assert data["caption"] == sorted(data["caption"]) and set(data["caption"]) <= set(range(10))
    assert 25 <= len(data) <= 30 and all(label == 1.0 for label in data["label_0"])
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["num_pairs"] == len(data) and metrics["verifier"] == "classifier"
    # the stored winner is the image the verifier preferred (PNG rounds to 8 bits)
    dm = PreferenceDataModule(str(run / "pairs"), image_mode="L", batch_size=64, in_memory=True, shuffle=False)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    verifier = ClassifierVerifier(str(digits_setup.verifier))
    with torch.no_grad():
        winners, losers = verifier(batch["image_w"], batch["condition"]), verifier(batch["image_l"], batch["condition"])
    assert torch.allclose(winners, torch.tensor(data["score_0"]), atol=0.05) and (winners > losers).all()
    dpo = patched_recipe("digits/dpo.yaml", tmp_path, digits_setup)
    main(["fit", "--config", str(dpo), "--trainer.max_steps=3", "--trainer.enable_progress_bar=false",
          "--data.init_args.batch_size=8"])  # fmt: skip
    assert (tmp_path / "runs/digits/dpo/adapter" / ADAPTER_FILE).is_file()
