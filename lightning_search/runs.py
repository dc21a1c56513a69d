"""The run folder: the one place that writes and reads what a run leaves on disk.

    <run>/fingerprint.json          what decides the run's samples (``fingerprint.py``, :meth:`RunFolder.claim`)
    <run>/config.yaml               the resolved config (LightningCLI's SaveConfigCallback)
    <run>/predictions/images/<id>.png, predictions/records.jsonl
                                    one image and one record per sample (``records.rank<r>.jsonl`` while running)
    <run>/metrics.json, grid.png, verifiers.md    written at the end of predict (RunReport)
    <run>/pairs/                    a preference data set in the Pick-a-Pic schema (``lightning-search pairs``)

Every file is written whole or not at all (a temporary file in the same folder, then a rename), with the
permissions the umask gives (``os.open(..., 0o666)``: ``mkstemp`` would give 0600 whatever the umask). A
record is one fsynced line appended to the rank's own shard after its image is in place, so a killed run
loses at most the batch in flight; a half-written last line (killed inside the write) is cut off before the
next append and ignored when reading.

A run folder carries the fingerprint of everything that decides its samples (the weights' identity, the
sampler, the search, the verifiers, the seed, the data selection): a run with the same fingerprint resumes
into it, one with another stops before anything in the folder changes, with an error naming the settings that
differ and how to start over.

The writer, the reporters, LoRA saving and the commands all go through this module; it knows no other layer.
"""

from __future__ import annotations

import io
import json
import math
import os
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from lightning_search.errors import ConfigurationError, RunFolderError
from lightning_search.fingerprint import fingerprint_differences

RECORDS = "records.jsonl"
FINGERPRINT = "fingerprint.json"
METRICS = "metrics.json"
TEMPORARY_SUFFIX = ".tmp"


# -- whole files ------------------------------------------------------------------------------------------


def _write_all(fd: int, data: bytes) -> None:
    """``os.write`` until every byte is written (it may write fewer than asked)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def atomic_write_bytes(path: str | Path, data: bytes, fsync: bool = True) -> None:
    """Write to a temporary file in the same folder, then rename: readers never see half a file.

    ``fsync`` also survives a power loss; a killed process cannot lose a renamed file either way, so bulk
    outputs whose record is fsynced afterwards (sample PNGs) skip it: it is most of their cost.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}{TEMPORARY_SUFFIX}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # 0o666 & ~umask, as open() would give
    try:
        try:
            _write_all(fd, data)
            if fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def write_json(path: str | Path, value: Any) -> None:
    """Strict JSON (NaN / inf as null), indented, written atomically."""
    atomic_write_text(path, json.dumps(json_safe(value), indent=2) + "\n")


def read_json(path: str | Path) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise RunFolderError(f"{str(path)!r} is not valid JSON ({err}); delete it or restore it from a copy") from None


def json_safe(value: Any) -> Any:
    """NaN / inf -> None, tensors -> lists, so that records are strict JSON."""
    if isinstance(value, torch.Tensor):
        value = value.tolist()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


# -- images -----------------------------------------------------------------------------------------------


def image_to_png_bytes(image: torch.Tensor) -> bytes:
    """(C, H, W) in [0, 1] -> PNG bytes (8-bit, grey for one channel)."""
    array = (image.detach().float().clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()
    pil = Image.fromarray(array[..., 0] if array.shape[2] == 1 else array)
    buffer = io.BytesIO()
    pil.save(buffer, format="PNG")
    return buffer.getvalue()


def load_image(path: str | Path) -> torch.Tensor:
    """PNG -> (C, H, W) float in [0, 1]."""
    array = np.asarray(Image.open(path))
    if array.ndim == 2:
        array = array[..., None]
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float() / 255


# -- records ----------------------------------------------------------------------------------------------


def read_jsonl(path: str | Path) -> list[dict]:
    """Records of a JSONL file. A half-written *last* line (a writer killed inside its write) is ignored; a
    damaged line before it cannot come from our writer and is an error naming the file and the line."""
    path = Path(path)
    if not path.is_file():
        return []
    try:
        lines = path.read_text(encoding="utf-8").split("\n")
    except UnicodeDecodeError as err:
        raise RunFolderError(f"{str(path)!r} is not UTF-8 text ({err.reason} at byte {err.start})") from None
    records = []
    for number, line in enumerate(lines[:-1], start=1):  # after the last newline: a line still being written
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as err:
            raise RunFolderError(
                f"{str(path)}, line {number}: not a JSON record ({err.msg}); the run folder was edited or damaged: "
                "remove that line (the sample is then recomputed) or start the run in a new folder"
            ) from None
    return records


def append_lines(path: str | Path, lines: Iterable[str]) -> None:
    """Append whole lines and fsync. A half line left by a killed writer is cut off first, so that the new
    lines start on a line of their own (each rank appends only to its own file: nobody else is writing)."""
    data = "".join(lines).encode()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o666)
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            tail = min(size, 1 << 20)
            chunk = os.pread(fd, tail, size - tail)
            os.ftruncate(fd, size - tail + chunk.rfind(b"\n") + 1)
        _write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def read_records(run_dir: str | Path) -> list[dict]:
    """The records of a run (merged file and any per-rank shards), one per sample id, sorted by id."""
    return RunFolder(run_dir).records()


def load_run_images(run_dir: str | Path, records: list[dict]) -> torch.Tensor:
    """(N, C, H, W) images of the records, in record order."""
    return RunFolder(run_dir).load_images(records)


# -- the folder -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunFolder:
    """One run's folder (``--trainer.default_root_dir``, or a writer's ``output_dir``)."""

    root: Path

    def __init__(self, root: str | Path) -> None:
        object.__setattr__(self, "root", Path(root))

    @property
    def predictions(self) -> Path:
        return self.root / "predictions"

    @property
    def metrics_path(self) -> Path:
        return self.root / METRICS

    @property
    def fingerprint_path(self) -> Path:
        return self.root / FINGERPRINT

    @property
    def pairs_path(self) -> Path:
        return self.root / "pairs"

    def shard(self, rank: int) -> Path:
        return self.predictions / f"records.rank{rank}.jsonl"

    def shards(self) -> list[Path]:
        return sorted(self.predictions.glob("records.rank*.jsonl"))

    # -- the fingerprint ---------------------------------------------------------------------------------
    def claim(self, run: dict[str, Any], fresh: bool = False) -> None:
        """Make this folder the folder of the run with fingerprint ``run`` (:func:`fingerprint`), before any
        output is written. A new folder (or one whose run stopped before writing anything) takes it; the
        same fingerprint resumes; another stops here with an error naming what differs, and nothing in the
        folder changes. ``fresh``: the run starts its outputs afresh (``PredictionWriter(resume=False)``)."""
        path = self.fingerprint_path
        if not fresh and path.is_file() and self.has_outputs():
            differences = fingerprint_differences(read_json(path), run)
            if differences:
                shown = "; ".join(differences[:6]) + (
                    f"; and {len(differences) - 6} more" if len(differences) > 6 else ""
                )
                raise RunFolderError(
                    f"{str(self.root)!r} holds a run made with other settings ({shown}); nothing in it was changed. "
                    f"Rerun with its settings to resume it, or start over: `rm -r {self.root}`, or write elsewhere "
                    "with --trainer.default_root_dir NEW_FOLDER"
                )
            return
        if not fresh and not path.is_file() and self.has_outputs():
            raise RunFolderError(
                f"{str(self.root)!r} holds outputs of a run without a fingerprint (made by an older version?), so "
                f"they cannot be told apart from other settings; nothing in it was changed. Move it away "
                f"(`mv {self.root} {self.root}.old`) or write elsewhere with --trainer.default_root_dir NEW_FOLDER"
            )
        write_json(path, run)

    # -- checks -----------------------------------------------------------------------------------------
    def check_writable(self) -> None:
        """Fail now, with the path, when the folder cannot be created or written (a file, no permission)."""
        for parent in [self.root, *self.root.parents]:
            if parent.exists():
                if not parent.is_dir():
                    raise RunFolderError(
                        f"the run folder {str(self.root)!r} cannot be created: {str(parent)!r} is a file; "
                        "pass another --trainer.default_root_dir"
                    )
                break
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe = self.root / f".write-test.{secrets.token_hex(4)}{TEMPORARY_SUFFIX}"
            os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            probe.unlink()
        except OSError as err:
            raise RunFolderError(
                f"cannot write into the run folder {str(self.root)!r} ({err.strerror}); pass another "
                "--trainer.default_root_dir or fix its permissions"
            ) from None

    def remove_temporary_files(self) -> None:
        """Temporary files of writes a killed run did not finish (never renamed: never seen by readers)."""
        import shutil

        for folder in (self.root, self.predictions, self.predictions / "images"):
            if folder.is_dir():
                for path in folder.glob(f".*{TEMPORARY_SUFFIX}"):
                    if path.is_dir():
                        shutil.rmtree(path, ignore_errors=True)
                    else:
                        path.unlink(missing_ok=True)

    # -- records and images -----------------------------------------------------------------------------
    def records(self) -> list[dict]:
        """Merged file and shards, one record per sample id (the first seen), sorted by id."""
        by_id: dict[int, dict] = {}
        for path in [self.predictions / RECORDS, *self.shards()]:
            for record in read_jsonl(path):
                try:
                    by_id.setdefault(int(record["sample_id"]), record)
                except (KeyError, TypeError, ValueError):
                    raise RunFolderError(f"{str(path)!r} holds a record without an integer sample_id") from None
        return [by_id[k] for k in sorted(by_id)]

    def done_ids(self) -> set[int]:
        """Sample ids already recorded: what a resumed run skips."""
        return {int(r["sample_id"]) for r in self.records()}

    def has_outputs(self) -> bool:
        return bool(self.done_ids()) or self.metrics_path.is_file() or self.pairs_path.exists()

    @staticmethod
    def image_name(sample_id: int) -> str:
        return f"images/{sample_id:06d}.png"

    def write_image(self, sample_id: int, image: torch.Tensor) -> str:
        """(C, H, W) in [0, 1] -> ``predictions/images/<id>.png`` (not fsynced: its record is) -> its name."""
        name = self.image_name(sample_id)
        atomic_write_bytes(self.predictions / name, image_to_png_bytes(image), fsync=False)
        return name

    def append_records(self, rank: int, records: list[dict[str, Any]]) -> None:
        """One strict-JSON line per record, appended to the rank's shard and fsynced."""
        append_lines(self.shard(rank), [json.dumps(json_safe(r)) + "\n" for r in records])

    def merge_records(self) -> Path:
        """Every shard (and an earlier merged file) into one sorted, de-duplicated records.jsonl."""
        records = self.records()
        path = self.predictions / RECORDS
        atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in records))
        for shard in self.shards():
            shard.unlink()
        return path

    def clear_records(self) -> None:
        for path in [self.predictions / RECORDS, *self.shards()]:
            path.unlink(missing_ok=True)

    def load_images(self, records: list[dict]) -> torch.Tensor:
        """(N, C, H, W) images of the records, in record order."""
        missing = [r["image"] for r in records if not (self.predictions / r["image"]).is_file()]
        if missing:
            raise RunFolderError(
                f"{len(missing)} images of {str(self.root)!r} are missing (e.g. {missing[0]}); rerun its predict"
            )
        return torch.stack([load_image(self.predictions / r["image"]) for r in records])

    # -- metrics ----------------------------------------------------------------------------------------
    def write_metrics(self, metrics: dict[str, Any]) -> None:
        write_json(self.metrics_path, metrics)

    def read_metrics(self) -> dict[str, Any]:
        if not self.metrics_path.is_file():
            raise ConfigurationError(
                f"{str(self.root)!r} holds no metrics.json; run `lightning-search predict` into it (with the RunReport "
                "callback) or list it in a compare config with its predict arguments"
            )
        return read_json(self.metrics_path)


def write_preference_pairs(path: str | Path, columns: dict[str, list]) -> Path:
    """A preference data set in the Pick-a-Pic schema (caption, jpg_0, jpg_1, label_0, ...) as a ``save_to_disk``
    folder, or one parquet file if ``path`` ends in ``.parquet``; written beside its place, then renamed, so
    that a reader never meets half a data set."""
    import shutil

    import datasets

    data = datasets.Dataset.from_dict(columns)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}{TEMPORARY_SUFFIX}"
    try:
        if path.suffix == ".parquet":
            data.to_parquet(str(tmp))
        else:
            data.save_to_disk(str(tmp))
        if path.is_dir():
            old = path.parent / f".{path.name}.old.{secrets.token_hex(4)}{TEMPORARY_SUFFIX}"
            path.rename(old)
            tmp.rename(path)
            shutil.rmtree(old)
        else:
            os.replace(tmp, path)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise
    return path
