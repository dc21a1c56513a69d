"""The run folder (``runs.py``), fingerprints (``fingerprint.py``) and checkpoint checks (``checkpoints.py``):
files appear whole or not at all and with the umask's permissions, a half-written record line is cut off
before the next append, a damaged one is named by file and line, a folder of other settings is refused with
the differing keys and left as it was, and bad checkpoint files are one clear error each."""

from __future__ import annotations

import hashlib
import json
import os
import stat

import pytest
import torch

from lightning_search.checkpoints import check_checkpoint_file, load_checkpoint
from lightning_search.errors import CheckpointError, RunFolderError
from lightning_search.fingerprint import fingerprint, fingerprint_differences
from lightning_search.runs import (
    RunFolder,
    append_lines,
    atomic_write_bytes,
    read_jsonl,
    write_preference_pairs,
)


def tree(root) -> dict[str, str]:
    """Every file under root and the sha256 of its bytes."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()
    }


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_files_get_the_permissions_the_umask_gives(tmp_path, umask):
    old = os.umask(umask)
    try:
        atomic_write_bytes(tmp_path / "a.png", b"png")
        append_lines(tmp_path / "records.jsonl", ['{"sample_id": 1}\n'])
        (tmp_path / "plain").write_bytes(b"")  # what open() gives under this umask
    finally:
        os.umask(old)
    expected = stat.S_IMODE((tmp_path / "plain").stat().st_mode)
    assert expected == 0o666 & ~umask
    for name in ("a.png", "records.jsonl"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == expected, name


def test_an_atomic_write_that_fails_leaves_neither_the_file_nor_a_temporary(tmp_path, monkeypatch):
    atomic_write_bytes(tmp_path / "x.json", b"old")

    def refuse(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(OSError):
        atomic_write_bytes(tmp_path / "x.json", b"new")
    assert (tmp_path / "x.json").read_bytes() == b"old" and sorted(os.listdir(tmp_path)) == ["x.json"]


def test_a_half_written_last_record_is_ignored_then_cut_off_before_the_next_append(tmp_path):
    shard = tmp_path / "records.rank0.jsonl"
    shard.write_text('{"sample_id": 1}\n{"sample_id": 2, "sco')  # killed inside the write of record 2
    assert read_jsonl(shard) == [{"sample_id": 1}]
    append_lines(shard, ['{"sample_id": 2}\n', '{"sample_id": 3}\n'])
    assert shard.read_text() == '{"sample_id": 1}\n{"sample_id": 2}\n{"sample_id": 3}\n'


def test_a_damaged_record_before_the_last_line_is_named_by_file_and_line(tmp_path):
    shard = tmp_path / "predictions" / "records.jsonl"
    shard.parent.mkdir()
    shard.write_text('{"sample_id": 1}\nnot json\n{"sample_id": 3}\n')
    with pytest.raises(RunFolderError, match=r"records.jsonl, line 2: not a JSON record"):
        RunFolder(tmp_path).records()


def _run(tmp_path, **search):
    checkpoint = tmp_path / "weights.ckpt"
    if not checkpoint.exists():
        checkpoint.write_bytes(b"weights v1")
    settings = {"model": {"init_weights": str(checkpoint)}, "search": {"algorithm": "random", "num_candidates": 8}}
    settings["search"].update(search)
    return fingerprint(settings)


def test_same_settings_resume_other_settings_are_refused_and_nothing_changes(tmp_path):
    folder = RunFolder(tmp_path / "run")
    folder.claim(_run(tmp_path))
    folder.append_records(0, [{"sample_id": 0}])
    folder.claim(_run(tmp_path))  # the same run: resumes
    before = tree(folder.root)
    with pytest.raises(RunFolderError) as info:
        folder.claim(_run(tmp_path, algorithm="zero_order", num_candidates=4, iterations=2))
    message = str(info.value)
    assert "search.algorithm: 'random' -> 'zero_order'" in message and "search.num_candidates: 8 -> 4" in message
    assert "search.iterations: '<unset>' -> 2" in message and f"rm -r {folder.root}" in message
    assert tree(folder.root) == before  # not a byte changed
    folder.claim(_run(tmp_path, num_candidates=32), fresh=True)  # resume=False: starts afresh, takes the folder
    assert json.loads(folder.fingerprint_path.read_text())["settings"]["search.num_candidates"] == 32


def test_a_retrained_checkpoint_at_the_same_path_is_another_run(tmp_path):
    first = _run(tmp_path)
    assert first["settings"]["model.init_weights"].startswith("sha256:")
    (tmp_path / "weights.ckpt").write_bytes(b"weights v2")
    assert fingerprint_differences(first, _run(tmp_path)) == [
        f"model.init_weights: the contents of {str(tmp_path / 'weights.ckpt')!r} changed"
    ]


def test_batching_and_sharding_are_not_part_of_a_fingerprint():
    a = fingerprint({"search": {"decode_batch_size": 8, "seed": 0}, "data": {"predict_batch_size": 250}})
    b = fingerprint({"search": {"decode_batch_size": 64, "seed": 0}, "data": {"predict_batch_size": 2000}})
    assert fingerprint_differences(a, b) == [] and a["settings"] == {"search.seed": 0}


def test_outputs_without_a_fingerprint_are_not_adopted(tmp_path):
    folder = RunFolder(tmp_path)
    folder.append_records(0, [{"sample_id": 5}])
    with pytest.raises(RunFolderError, match="without a fingerprint"):
        folder.claim(_run(tmp_path))
    assert not folder.fingerprint_path.exists()


def test_a_run_folder_that_is_a_file_or_cannot_be_made_is_named(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(RunFolderError, match="is a file"):
        RunFolder(tmp_path / "file" / "run").check_writable()
    with pytest.raises(RunFolderError, match="cannot write into the run folder"):
        RunFolder("/proc/lightning-search-test/run").check_writable()  # not writable, even as root


def test_bad_checkpoint_files_are_one_clear_error_each(tmp_path):
    good = tmp_path / "good.ckpt"
    torch.save({"state_dict": {"w": torch.ones(256, 256)}}, good)
    data = good.read_bytes()
    cases = {"empty.ckpt": b"", "truncated.ckpt": data[: len(data) // 2], "random.ckpt": os.urandom(4096)}
    expected = {"empty.ckpt": "is empty", "truncated.ckpt": "is truncated", "random.ckpt": "not a PyTorch checkpoint"}
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(CheckpointError, match=expected[name]):
            check_checkpoint_file(tmp_path / name)
    assert load_checkpoint(good)["state_dict"]["w"].sum() == 256 * 256
    (tmp_path / "list.ckpt").write_bytes(b"")
    torch.save([1, 2], tmp_path / "list.ckpt")
    with pytest.raises(CheckpointError, match="holds a list"):
        load_checkpoint(tmp_path / "list.ckpt")


def test_a_pairs_data_set_is_replaced_whole(tmp_path):
    import datasets

    path = tmp_path / "pairs"
    write_preference_pairs(path, {"caption": [1, 2], "label_0": [1.0, 1.0]})
    write_preference_pairs(path, {"caption": [3], "label_0": [1.0]})
    assert datasets.load_from_disk(str(path))["caption"] == [3]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pairs"]  # no temporary or old copy left
