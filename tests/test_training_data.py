"""Training inputs: official crops and padding, the dev window, per-item determinism, decoding."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from torch.utils.data import DataLoader

from training_data import write_csv_set, write_folder_set
from voxguard.audio.options import WINDOW
from voxguard.audio.windows import make_windows
from voxguard.datasets import BONAFIDE, SPOOF, Dataset, DatasetError, Item, load_dataset
from voxguard.training.augment import Augmenter
from voxguard.training.data import (
    LABEL_INDEX,
    DevWindows,
    EpochBatches,
    TrainWindows,
    check_labels,
    decode_all,
    load_waveform,
    make_loader,
    pad_head,
    pad_random,
    tile_to,
)


def test_label_index_follows_the_logits() -> None:
    assert LABEL_INDEX == {SPOOF: 0, BONAFIDE: 1}


def test_short_clip_is_repeated_from_its_start_not_zero_padded() -> None:
    x = np.arange(1, 1001, dtype=np.float32)
    for window in (pad_random(x, WINDOW, np.random.default_rng(0)), pad_head(x, WINDOW), tile_to(x, WINDOW)):
        assert window.shape == (WINDOW,)
        assert np.array_equal(window[:1000], x) and np.array_equal(window[1000:2000], x)
        assert window[-1] == x[(WINDOW - 1) % 1000]
        assert np.all(window != 0)


def test_random_crop_is_a_contiguous_slice_at_every_possible_offset() -> None:
    x = np.arange(WINDOW + 5, dtype=np.float32)
    rng = np.random.default_rng(0)
    starts = set()
    for _ in range(300):
        crop = pad_random(x, WINDOW, rng)
        assert crop.shape == (WINDOW,)
        assert np.array_equal(crop, x[int(crop[0]) : int(crop[0]) + WINDOW])
        starts.add(int(crop[0]))
    assert starts == set(range(6))  # 0..5, the last offset included
    exact = np.arange(WINDOW, dtype=np.float32)
    assert np.array_equal(pad_random(exact, WINDOW, rng), exact)


def test_dev_window_is_the_head_and_equals_the_served_first_window() -> None:
    long = np.random.default_rng(1).standard_normal(WINDOW * 2).astype(np.float32)
    assert np.array_equal(pad_head(long, WINDOW), long[:WINDOW])
    for x in (long, long[:20000]):
        served = make_windows(x, preprocess="reference").batch[0]
        assert np.array_equal(pad_head(x, WINDOW), served)


def test_epoch_batches_shuffle_per_epoch_and_drop_the_partial_batch() -> None:
    first = list(EpochBatches(10, 3, seed=5, epoch=1))
    assert len(first) == len(EpochBatches(10, 3, seed=5, epoch=1)) == 3
    indices = [i for batch in first for _, i in batch]
    assert len(set(indices)) == 9 and {e for batch in first for e, _ in batch} == {1}
    assert first == list(EpochBatches(10, 3, seed=5, epoch=1))
    assert indices != [i for batch in EpochBatches(10, 3, seed=5, epoch=2) for _, i in batch]
    assert indices != [i for batch in EpochBatches(10, 3, seed=6, epoch=1) for _, i in batch]


def _items(root: Path) -> list[Item]:
    """Clips longer than a window, so crops are random."""
    return load_dataset(write_folder_set(root, 3, seed=0, seconds=(4.5, 6.0))).items


def test_train_window_depends_only_on_seed_epoch_and_index(tmp_path: Path) -> None:
    items = _items(tmp_path)
    cached = TrainWindows(items, seed=3, waveforms=[load_waveform(i) for i in items])
    lazy = TrainWindows(items, seed=3)
    x, label = cached[(1, 4)]
    assert x.shape == (WINDOW,) and x.dtype == torch.float32 and label == LABEL_INDEX[items[4].label]
    assert torch.equal(x, lazy[(1, 4)][0])  # decoding up front or per item gives the same crop
    assert not torch.equal(x, cached[(2, 4)][0])  # a new epoch, a new crop
    assert not torch.equal(x, TrainWindows(items, seed=4, waveforms=cached.waveforms)[(1, 4)][0])


def test_worker_processes_give_the_same_batches(tmp_path: Path) -> None:
    items = _items(tmp_path)
    dataset = TrainWindows(items, seed=3, augment=Augmenter(("gain", "noise"), probability=1.0))

    def loader(workers: int) -> DataLoader:
        sampler = EpochBatches(len(items), 2, 3, 1)
        return make_loader(dataset, batch_sampler=sampler, workers=workers, seed=3, pin_memory=False)

    for (xa, ya), (xb, yb) in zip(loader(0), loader(2), strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    # Forked workers share the in-memory cache; a forkserver or spawn start would pickle it to each.
    assert loader(0).multiprocessing_context is None
    assert loader(2).multiprocessing_context.get_start_method() == "fork"


def test_dev_windows_and_decode_all(tmp_path: Path) -> None:
    dataset = load_dataset(write_csv_set(tmp_path, 2, seed=1))
    heads = decode_all(dataset.items, keep=WINDOW, threads=2, progress=False, what="dev")
    full = [load_waveform(item) for item in dataset.items]
    assert [h.shape[0] for h in heads] == [min(f.shape[0], WINDOW) for f in full]
    cached, lazy = DevWindows(dataset.items, heads), DevWindows(dataset.items)
    for i in range(len(dataset.items)):
        assert torch.equal(cached[i][0], lazy[i][0])
        assert torch.equal(cached[i][0], torch.from_numpy(pad_head(full[i], WINDOW)))


def test_resampled_and_stereo_files_decode_to_16k_mono(tmp_path: Path) -> None:
    t = np.arange(44100) / 44100
    stereo = np.stack([np.sin(2 * np.pi * 440 * t), np.sin(2 * np.pi * 440 * t)], axis=1) * 0.3
    sf.write(tmp_path / "a.flac", stereo, 44100)
    x = load_waveform(Item("a", tmp_path / "a.flac", BONAFIDE))
    assert x.dtype == np.float32 and x.ndim == 1 and abs(x.shape[0] - 16000) <= 1


def test_unreadable_file_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio at all")
    with pytest.raises(DatasetError, match=r"bad\.wav"):
        load_waveform(Item("bad", bad, SPOOF))


def test_a_set_without_both_labels_is_refused(tmp_path: Path) -> None:
    only_spoof = Dataset("x", "folder", [Item("a", tmp_path / "a.wav", SPOOF)])
    with pytest.raises(DatasetError, match="no bonafide"):
        check_labels(only_spoof, "dev")
