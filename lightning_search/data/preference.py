"""Preference pairs for Diffusion-DPO and SFT, read from a data set in the Pick-a-Pic v2 schema.

The schema (Kirstain et al. 2023, ``yuvalkirstain/pickapic_v2``): one row per pair with ``caption`` (the
condition: a prompt, or a class id for class-conditional models), ``jpg_0`` and ``jpg_1`` (encoded image bytes,
any format PIL reads, or a ``datasets.Image`` column) and ``label_0`` (1: image 0 preferred, 0: image 1
preferred, 0.5: a tie). Ties are dropped, as in Wallace et al. 2023; so are pairs without a label and pairs whose
images are missing or cannot be decoded, and the counts are logged. Column names can be mapped for other sets.

Batches: ``{"image_w": (B, C, H, W) in [0, 1], "image_l": (B, C, H, W) in [0, 1], "condition": [B conditions]}``
(the preferred image first), what :class:`~lightning_search.objectives.DiffusionDPO` and
:class:`~lightning_search.objectives.PreferredSFT` read.

AI-feedback pairs (best against worst of K samples by a verifier) are made by ``lightning-search pairs``, a
predict run that writes them in this schema (``lightning_search/pairs.py``); this module only reads: data
knows no models.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from lightning import LightningDataModule
from lightning.pytorch.utilities import rank_zero_info
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from lightning_search.data.resumable import ResumableTrainData
from lightning_search.errors import CheckpointError, ConfigurationError

DISK_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")  # written by save_to_disk


# -- reading ------------------------------------------------------------------------------------------------


def load_preference_dataset(source: str, split: str = "train"):
    """A ``datasets.Dataset`` from a ``save_to_disk`` folder, parquet file(s) / a folder of them, a folder
    ``datasets.load_dataset`` reads, or a hub id (never with remote code)."""
    import datasets

    path = Path(source).expanduser()
    try:
        if path.is_dir() and any((path / m).is_file() for m in DISK_MARKERS):
            data = datasets.load_from_disk(str(path))
            if isinstance(data, datasets.DatasetDict):
                if split not in data:
                    raise ConfigurationError(f"{source!r} has splits {sorted(data)}, not {split!r}; set split")
                data = data[split]
            return data
        if path.is_dir() and any(path.rglob("*.parquet")):
            files = sorted(str(p) for p in path.rglob("*.parquet"))
            return datasets.load_dataset("parquet", data_files=files, split="train")
        if source.endswith(".parquet"):
            if "*" not in source and not path.is_file():
                raise CheckpointError(f"preference data {source!r} not found")
            return datasets.load_dataset("parquet", data_files=str(path) if path.is_file() else source, split="train")
        if path.exists():
            return datasets.load_dataset(str(path), split=split)
        if source.startswith((".", "/", "~")) or source.count("/") > 1:
            raise CheckpointError(
                f"preference data {source!r} not found: make it with `lightning-search pairs` (AI-feedback pairs) "
                "or point to a save_to_disk folder, parquet files or a hub id"
            )
        return datasets.load_dataset(source, split=split)
    except (FileNotFoundError, ConnectionError, OSError, ValueError) as err:
        if isinstance(err, (CheckpointError, ConfigurationError)):
            raise
        raise CheckpointError(
            f"could not load the preference data {source!r} ({type(err).__name__}: {str(err).splitlines()[0][:300]}). "
            "Without network access (HF_HUB_OFFLINE=1) a hub data set cannot be fetched: download it once, e.g. "
            f"`huggingface-cli download {source} --repo-type dataset --local-dir /data/<name>`, and pass the folder"
        ) from err


def decode_image(value: Any, mode: str = "RGB", resolution: int | None = None) -> torch.Tensor | None:
    """Encoded bytes, a ``datasets.Image`` dict ({bytes, path}), a PIL image or a file path -> (C, H, W) in
    [0, 1]; None when the image is missing or cannot be decoded. ``resolution``: resize the short side and
    centre-crop to a square (the Diffusion-DPO training transform, without the random flip)."""
    try:
        if value is None:
            return None
        if isinstance(value, dict):
            value = value.get("bytes") or value.get("path")
        if isinstance(value, (bytes, bytearray)):
            if not value:
                return None
            image = Image.open(io.BytesIO(value))
        elif isinstance(value, (str, Path)):
            image = Image.open(value)
        elif isinstance(value, Image.Image):
            image = value
        else:
            return None
        image = image.convert(mode)
        if resolution is not None:
            w, h = image.size
            scale = resolution / min(w, h)
            image = image.resize((max(resolution, round(w * scale)), max(resolution, round(h * scale))), Image.BICUBIC)
            w, h = image.size
            left, top = (w - resolution) // 2, (h - resolution) // 2
            image = image.crop((left, top, left + resolution, top + resolution))
        array = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8)
        channels = len(image.getbands())
        return array.view(image.size[1], image.size[0], channels).permute(2, 0, 1).float() / 255
    except (OSError, ValueError, SyntaxError):  # PIL's UnidentifiedImageError is an OSError
        return None


class PreferencePairs(Dataset):
    """Rows of a (filtered) preference ``datasets.Dataset`` as {image_w, image_l, condition}; None for a pair
    whose images fail to decode (the collate function drops it). ``decoded`` holds pairs decoded in advance."""

    def __init__(
        self, data, caption_column: str, image_columns: Sequence[str], label_column: str, mode: str, resolution
    ) -> None:
        self.data, self.caption, self.images, self.label = data, caption_column, list(image_columns), label_column
        self.mode, self.resolution = mode, resolution
        self.decoded: list[dict[str, Any]] | None = None

    def __len__(self) -> int:
        return len(self.decoded) if self.decoded is not None else len(self.data)

    def decode_row(self, caption: Any, image_0: Any, image_1: Any, label: float) -> dict[str, Any] | None:
        first = float(label) >= 0.5  # label_0 = 1: image 0 preferred (ties were dropped)
        win, lose = (image_0, image_1) if first else (image_1, image_0)
        image_w = decode_image(win, self.mode, self.resolution)
        image_l = decode_image(lose, self.mode, self.resolution)
        if image_w is None or image_l is None:
            return None
        return {"image_w": image_w, "image_l": image_l, "condition": caption}

    def decode_all(self) -> list[dict[str, Any] | None]:
        """Every pair decoded (None where decoding fails), reading the columns in bulk (fast for small sets)."""
        columns = [self.data[c] for c in (self.caption, *self.images, self.label)]
        return [self.decode_row(*row) for row in zip(*columns)]

    def __getitem__(self, i: int) -> dict[str, Any] | None:
        if self.decoded is not None:
            return self.decoded[i]
        row = self.data[int(i)]
        return self.decode_row(row[self.caption], row[self.images[0]], row[self.images[1]], row[self.label])


LABELS = (0.0, 0.5, 1.0)


def preference_label(value: Any, source: str, column: str, row: int) -> float | None:
    """A pair's label as 0, 0.5 or 1 (None: unlabelled, dropped and counted). Anything else is an error naming
    the row: a label of 2 or 0.7 is not a preference this schema has, and silently dropping it as a tie would
    lose pairs."""
    if value is None:
        return None
    try:
        label = float(value)
    except (TypeError, ValueError):
        raise ConfigurationError(
            f"preference data {source!r}, row {row}: {column} is {value!r}, not a number; Pick-a-Pic labels are "
            "1 (image 0 preferred), 0 (image 1 preferred) or 0.5 (a tie)"
        ) from None
    if label != label:  # NaN: no label
        return None
    if label not in LABELS:
        raise ConfigurationError(
            f"preference data {source!r}, row {row}: {column} is {value!r}; Pick-a-Pic labels are 1 (image 0 "
            "preferred), 0 (image 1 preferred) or 0.5 (a tie): map other scales to these first"
        )
    return label


def collate_pairs(rows: list[dict[str, Any] | None]) -> dict[str, Any]:
    """Stack pairs; pairs that failed to decode (None) are left out."""
    rows = [r for r in rows if r is not None]
    if not rows:
        raise ConfigurationError("a whole batch of preference pairs failed to decode; check the image columns")
    shapes = {tuple(r["image_w"].shape) for r in rows} | {tuple(r["image_l"].shape) for r in rows}
    if len(shapes) > 1:
        raise ConfigurationError(
            f"preference images of different sizes {sorted(shapes)[:3]} cannot be batched; set resolution"
        )
    return {
        "image_w": torch.stack([r["image_w"] for r in rows]),
        "image_l": torch.stack([r["image_l"] for r in rows]),
        "condition": [r["condition"] for r in rows],
    }


# -- the DataModule -----------------------------------------------------------------------------------------


class PreferenceDataModule(ResumableTrainData, LightningDataModule):
    """Preference pairs for fine-tuning (Diffusion-DPO, SFT on winners).

    Args:
        source: a ``save_to_disk`` folder (e.g. the ``pairs/`` of a ``lightning-search pairs`` run), parquet
            file(s) (a file, a glob or a folder of them), a folder ``datasets.load_dataset`` reads, or a hub id
            (e.g. ``yuvalkirstain/pickapic_v2``, downloaded first).
        split: the split of a hub id or a DatasetDict folder.
        caption_column, image_columns, label_column: the schema's columns (Pick-a-Pic v2 names by default).
        image_mode: PIL mode of the decoded images (``RGB``; ``L`` for grey digits).
        resolution: resize + centre-crop to this square size (None: keep, all images must match).
        batch_size: pairs per batch.
        limit: use at most this many pairs (after filtering).
        validate_images: decode every pair once in ``setup`` so bad pairs are dropped and counted up front
            (for very large sets turn it off: bad pairs are then skipped when batched).
        in_memory: keep the decoded images in memory (small sets such as digits pairs: no decoding per step).
        shuffle: a new seeded order every epoch (``data/resumable.py``); False: the data set's order.
        seed: of the training order; None: the run's ``seed_everything``.
    """

    def __init__(
        self,
        source: str | None = None,
        split: str = "train",
        caption_column: str = "caption",
        image_columns: list[str] | None = None,
        label_column: str = "label_0",
        image_mode: str = "RGB",
        resolution: int | None = None,
        batch_size: int = 16,
        limit: int | None = None,
        validate_images: bool = True,
        in_memory: bool = False,
        shuffle: bool = True,
        num_workers: int = 0,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        if source is None:
            raise ConfigurationError("PreferenceDataModule needs source (where the pairs are)")
        self.save_hyperparameters()
        self.source, self.seed = source, int(torch.initial_seed() if seed is None else seed)
        self.image_columns = list(image_columns or ["jpg_0", "jpg_1"])
        if len(self.image_columns) != 2:
            raise ConfigurationError(f"image_columns names the two images of a pair, got {self.image_columns}")
        self.stats: dict[str, int] = {}
        self.pairs: PreferencePairs | None = None

    # -- reading -------------------------------------------------------------------------------------------
    def required_columns(self) -> list[str]:
        return [self.hparams.caption_column, *self.image_columns, self.hparams.label_column]

    def setup(self, stage: str | None = None) -> None:
        if self.pairs is not None:
            return
        import datasets

        data = load_preference_dataset(self.source, self.hparams.split)
        missing = [c for c in self.required_columns() if c not in data.column_names]
        if missing:
            raise ConfigurationError(
                f"preference data {self.source!r} lacks the column(s) {', '.join(missing)} (it has "
                f"{', '.join(data.column_names)}); expected the Pick-a-Pic v2 schema caption, jpg_0, jpg_1, label_0 "
                "or set caption_column / image_columns / label_column to its names"
            )
        data = data.select_columns(self.required_columns())
        for column in self.image_columns:  # read encoded bytes ourselves, so a broken image is counted, not raised
            if isinstance(data.features[column], datasets.Image):
                data = data.cast_column(column, datasets.Image(decode=False))
        read = len(data)
        labels = [preference_label(v, self.source, self.hparams.label_column, i)
                  for i, v in enumerate(data[self.hparams.label_column])]  # fmt: skip
        keep = [i for i, v in enumerate(labels) if v in (0.0, 1.0)]
        ties = sum(1 for v in labels if v == 0.5)
        unlabelled = read - len(keep) - ties
        data = data.select(keep)
        pairs = PreferencePairs(
            data,
            self.hparams.caption_column,
            self.image_columns,
            self.hparams.label_column,
            self.hparams.image_mode,
            self.hparams.resolution,
        )
        bad = 0
        if self.hparams.validate_images or self.hparams.in_memory:
            decoded = pairs.decode_all()
            good = [i for i, row in enumerate(decoded) if row is not None]
            bad = len(decoded) - len(good)
            pairs.data = data.select(good)
            if self.hparams.in_memory:
                pairs.decoded = [decoded[i] for i in good]
        if self.hparams.limit is not None:
            pairs.data = pairs.data.select(range(min(self.hparams.limit, len(pairs.data))))
            if pairs.decoded is not None:
                pairs.decoded = pairs.decoded[: self.hparams.limit]
        self.stats = {"read": read, "ties": ties, "unlabelled": unlabelled, "bad_images": bad, "kept": len(pairs)}
        rank_zero_info(
            f"preference data {self.source}: {read} pairs read; dropped {ties} ties, {unlabelled} without a label, "
            f"{bad} with missing or undecodable images; {len(pairs)} kept"
        )
        if not len(pairs):
            raise ConfigurationError(f"no usable preference pairs in {self.source!r} ({self.stats})")
        self.pairs = pairs

    def train_dataloader(self) -> DataLoader:
        return self.train_loader(
            self.pairs,
            self.hparams.batch_size,
            self.seed,
            shuffle=self.hparams.shuffle,
            drop_last=len(self.pairs) > self.hparams.batch_size,
            num_workers=self.hparams.num_workers,
            collate_fn=collate_pairs,
        )
