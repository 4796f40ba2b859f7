"""The three data-set layouts eval and train read, and the errors they give."""

from __future__ import annotations

from pathlib import Path

import pytest

from voxguard.datasets import DatasetError, load_dataset


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


def test_asvspoof_2019_protocol(tmp_path: Path) -> None:
    for utt in ("LA_T_1", "LA_T_2"):
        _touch(tmp_path / "LA_train" / "flac" / f"{utt}.flac")
    protocol = tmp_path / "ASVspoof2019.LA.cm.train.trn.txt"
    protocol.write_text("LA_0079 LA_T_1 - - bonafide\nLA_0079 LA_T_2 - A01 spoof\n\n")
    data = load_dataset(protocol, tmp_path / "LA_train")
    assert data.layout == "asvspoof"
    assert [(i.key, i.label, i.attack) for i in data.items] == [
        ("LA_T_1", "bonafide", "-"),
        ("LA_T_2", "spoof", "A01"),
    ]
    assert data.items[0].path == tmp_path / "LA_train" / "flac" / "LA_T_1.flac"
    assert data.counts() == {"bonafide": 1, "spoof": 1}


def test_asvspoof_2021_keys(tmp_path: Path) -> None:
    _touch(tmp_path / "LA_E_9" / "LA_E_9332881.flac")
    _touch(tmp_path / "LA_E_9" / "LA_E_1.flac")
    keys = tmp_path / "trial_metadata.txt"
    keys.write_text(
        "LA_0009 LA_E_9332881 alaw ita_tx A07 spoof notrim eval\n"
        "LA_0012 LA_E_1 alaw ita_tx bonafide bonafide notrim eval\n"
    )
    data = load_dataset(keys, tmp_path / "LA_E_9")
    assert [(i.label, i.attack) for i in data.items] == [("spoof", "A07"), ("bonafide", "-")]


def test_protocol_needs_audio_dir_and_files(tmp_path: Path) -> None:
    protocol = tmp_path / "p.txt"
    protocol.write_text("LA_0079 LA_T_1 - - bonafide\n")
    with pytest.raises(DatasetError, match="audio folder"):
        load_dataset(protocol)
    with pytest.raises(DatasetError, match="1 listed files are missing"):
        load_dataset(protocol, tmp_path)
    protocol.write_text("not a protocol line\n")
    with pytest.raises(DatasetError, match="ASVspoof line"):
        load_dataset(protocol, tmp_path)


def test_csv_with_and_without_header(tmp_path: Path) -> None:
    _touch(tmp_path / "a.wav")
    _touch(tmp_path / "sub" / "b.flac")
    with_header = tmp_path / "list.csv"
    with_header.write_text("file,label,source,attack\na.wav,real,x,\nsub/b.flac,FAKE,y,tts\n")
    data = load_dataset(with_header)
    assert [(i.key, i.label, i.attack) for i in data.items] == [
        ("a.wav", "bonafide", "-"),
        ("sub/b.flac", "spoof", "tts"),
    ]
    plain = tmp_path / "plain.csv"
    plain.write_text("# comment\na.wav,bonafide\nsub/b.flac,spoof,A07\n")
    assert [i.attack for i in load_dataset(plain).items] == ["-", "A07"]
    plain.write_text("a.wav,bonafide\nsub/b.flac,maybe\n")
    with pytest.raises(DatasetError, match=r"plain.csv:2: unknown label 'maybe'"):
        load_dataset(plain)


def test_folder_layout_with_attack_subfolders(tmp_path: Path) -> None:
    _touch(tmp_path / "real" / "x.wav")
    _touch(tmp_path / "fake" / "tts1" / "y.mp3")
    _touch(tmp_path / "fake" / "z.flac")
    _touch(tmp_path / "fake" / "notes.txt")
    data = load_dataset(tmp_path)
    assert data.layout == "folder"
    assert sorted((i.key, i.label, i.attack) for i in data.items) == [
        ("fake/tts1/y.mp3", "spoof", "tts1"),
        ("fake/z.flac", "spoof", "-"),
        ("real/x.wav", "bonafide", "-"),
    ]
    with pytest.raises(DatasetError, match="neither bonafide"):
        load_dataset(tmp_path / "real")


def test_shared_samples_labels_csv(samples_dir: Path) -> None:
    data = load_dataset(samples_dir / "labels.csv")
    assert data.counts() == {"bonafide": 5, "spoof": 0}
    assert all(item.path.is_file() for item in data.items)
