"""Preference pairs: the Pick-a-Pic v2 schema from parquet / save_to_disk, bad rows dropped and counted, missing
columns named, and a tiny-SD DPO fit through the CLI on such a parquet."""

from __future__ import annotations

import io
import logging

import pytest
from PIL import Image

from lightning_search.data import PreferenceDataModule
from lightning_search.errors import ConfigurationError
from lightning_search.lora import ADAPTER_FILE
from tests.conftest import patched_recipe


def _jpeg(value: int, size: int = 16) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), (value, value, value)).save(buffer, format="JPEG", quality=100)
    return buffer.getvalue()


def pickapic_rows() -> dict[str, list]:
    """Eight pairs: image brightness names the pair (10 x i for image 0, 10 x i + 5 for image 1)."""
    rows = {"caption": [], "jpg_0": [], "jpg_1": [], "label_0": [], "label_1": []}
    labels = [1.0, 0.0, 0.5, 1.0, 0.0, 1.0, 0.5, 1.0]  # two ties
    for i, label in enumerate(labels):
        rows["caption"].append(f"prompt {i}")
        rows["jpg_0"].append(_jpeg(20 * i))
        rows["jpg_1"].append(_jpeg(20 * i + 10))
        rows["label_0"].append(label)
        rows["label_1"].append(1.0 - label)
    rows["jpg_1"][3] = b""  # a missing image
    rows["jpg_0"][5] = b"not an image"  # an undecodable one
    return rows


def write_parquet(path, rows=None) -> str:
    import datasets

    datasets.Dataset.from_dict(rows or pickapic_rows()).to_parquet(str(path))
    return str(path)


def test_pickapic_parquet_drops_ties_and_bad_images_and_counts_them(tmp_path, caplog):
    source = write_parquet(tmp_path / "pairs.parquet")
    dm = PreferenceDataModule(source, batch_size=8, shuffle=False)
    with caplog.at_level(logging.INFO):
        dm.setup("fit")
    assert dm.stats == {"read": 8, "ties": 2, "unlabelled": 0, "bad_images": 2, "kept": 4}
    assert "2 ties" in caplog.text and "2 with missing or undecodable images" in caplog.text
    batch = next(iter(dm.train_dataloader()))
    assert batch["condition"] == ["prompt 0", "prompt 1", "prompt 4", "prompt 7"]
    assert batch["image_w"].shape == (4, 3, 16, 16)
    brightness = [round(v * 255 / 10) * 10 for v in batch["image_w"].mean(dim=(1, 2, 3)).tolist()]
    assert brightness == [0, 30, 90, 140]  # label_0 = 0 swaps winner and loser (pairs 1 and 4)


def test_save_to_disk_folder_with_image_features_and_lazy_decoding(tmp_path):
    import datasets

    rows = pickapic_rows()
    rows["jpg_0"] = [Image.open(io.BytesIO(b)) if b.startswith(b"\xff") else None for b in rows["jpg_0"]]
    data = datasets.Dataset.from_dict(rows).cast_column("jpg_0", datasets.Image())
    data.save_to_disk(str(tmp_path / "disk"))
    dm = PreferenceDataModule(str(tmp_path / "disk"), batch_size=8, validate_images=False, resolution=8)
    dm.setup("fit")
    assert dm.stats["ties"] == 2 and dm.stats["kept"] == 6  # images are checked only when batched ...
    batch = next(iter(dm.train_dataloader()))
    assert len(batch["condition"]) == 4 and batch["image_l"].shape[1:] == (3, 8, 8)  # ... and skipped there


def test_missing_columns_are_named(tmp_path):
    rows = pickapic_rows()
    del rows["label_0"], rows["jpg_1"]
    source = write_parquet(tmp_path / "bad.parquet", rows)
    with pytest.raises(ConfigurationError, match="lacks the column\\(s\\) jpg_1, label_0"):
        PreferenceDataModule(source).setup("fit")
    with pytest.raises(FileNotFoundError, match="not found"):
        PreferenceDataModule(str(tmp_path / "nowhere.parquet")).setup("fit")


def test_tiny_sd_dpo_fit_through_the_cli_writes_a_diffusers_adapter(tmp_path):
    from lightning_search.cli import main

    rows = pickapic_rows()
    rows["caption"] = ["a red car", "two dogs in the snow", "a cat", "a bowl", "a blue bench", "a tree", "x", "a cup"]
    source = write_parquet(tmp_path / "pickapic.parquet", rows)
    recipe = patched_recipe("tiny/sd_dpo.yaml", tmp_path)
    main(["fit", "--config", str(recipe), f"--data.init_args.source={source}", "--trainer.max_steps=2"])
    adapter = tmp_path / "runs/tiny/sd_dpo/adapter"
    assert (adapter / ADAPTER_FILE).is_file()
    from diffusers import StableDiffusionPipeline

    from lightning_search.backbones.pipeline import tiny_modules
    from lightning_search.backbones.stable_diffusion import tiny_sd_pipeline

    pipe = tiny_modules(tiny_sd_pipeline)
    assert isinstance(pipe, StableDiffusionPipeline)
    pipe.load_lora_weights(str(adapter))  # a plain pipeline reads what the fit wrote
    assert any("lora_A" in n for n, _ in pipe.unet.named_parameters())
