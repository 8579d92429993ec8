"""What push_to_hub.py refuses before sending anything (hf_pipeline.publish_files): secrets by name and by content
(in any file type, in UTF-16/32 text, across read chunks), links out of the folder, and files over the size policy."""

from __future__ import annotations

import pytest

from hf_pipeline.publish_files import LARGE_FILE, SCAN_CHUNK, check_sizes, secret_in, upload_files
from push_to_hub import main

from .helpers import FAKE_TOKEN

PRIVATE_KEY = (
    "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmU=\n-----END OPENSSH PRIVATE KEY-----\n"
)


@pytest.mark.parametrize(
    "name", ["id_ed25519", "id_ecdsa", "server.key", ".env.production", ".aws/credentials", "kaggle.json", ".pypirc"]
)
def test_more_secret_files_are_refused(space_dir, capsys, name):
    (space_dir / name).parent.mkdir(exist_ok=True)
    (space_dir / name).write_text("secret\n", encoding="utf-8")
    argv = ["space", "--space_dir", str(space_dir), "--repo_id", "org/demo", "--model_id", "org/m", "--dry_run"]
    assert main(argv) == 2
    assert name in capsys.readouterr().err


@pytest.mark.parametrize(
    ("name", "content", "kind"),
    [
        ("notes.md", PRIVATE_KEY, "private key"),
        ("extra.safetensors", "\0\0header" + PRIVATE_KEY, "private key"),
        ("figure.png", "\x89PNG\0" + FAKE_TOKEN, "access token"),
        ("vocab.bin", "weights AKIAABCDEFGHIJKLMNOP weights", "AWS access key"),
    ],
)
def test_secrets_inside_any_file_type_are_refused(model_dir, capsys, name, content, kind):
    (model_dir / name).write_bytes(content.encode("latin-1"))
    assert main(["model", "--model_dir", str(model_dir), "--repo_id", "org/m", "--dry_run"]) == 2
    err = capsys.readouterr().err
    assert name in err and kind in err
    assert FAKE_TOKEN not in err and "b3BlbnNzaC1rZXkt" not in err


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be", "utf-32"])
def test_a_token_written_as_utf16_or_utf32_is_found(model_dir, capsys, encoding):
    (model_dir / "notes.txt").write_bytes(f"my token: {FAKE_TOKEN}\n".encode(encoding))
    assert main(["model", "--model_dir", str(model_dir), "--repo_id", "org/m", "--dry_run"]) == 2
    err = capsys.readouterr().err
    assert "notes.txt" in err and "access token" in err and FAKE_TOKEN not in err


def test_a_utf16_token_across_two_read_chunks_is_found(tmp_path):
    path = tmp_path / "big.txt"
    path.write_bytes(b"a\0" * ((SCAN_CHUNK - 20) // 2) + FAKE_TOKEN.encode("utf-16-le") + b"a\0" * 100)
    assert "access token" in secret_in(path)[0]


def test_files_too_large_for_the_repo_type_are_refused_unless_allowed(model_dir, dataset_dir, capsys):
    big = model_dir / "export.onnx.zip"
    with big.open("wb") as stream:  # a sparse file: 60 MiB on paper, nothing on disk
        stream.truncate(LARGE_FILE + 10 * 1024**2)
    argv = ["model", "--model_dir", str(model_dir), "--repo_id", "org/m", "--dry_run"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "export.onnx.zip (60.0 MiB)" in err and "--allow_large" in err
    assert main([*argv, "--allow_large"]) == 0
    out = capsys.readouterr().out
    assert "export.onnx.zip  (large: --allow_large)" in out and "size rule:  files over 50.0 MiB" in out
    big.unlink()
    weights = model_dir / "model.safetensors"
    with weights.open("r+b") as stream:  # weights may be any size in a model repo
        stream.truncate(LARGE_FILE + 1)
    assert check_sizes(model_dir, upload_files(model_dir), "model", allow_large=False) == []
    assert main(argv) == 2  # what refuses these weights is the bundle check: they no longer load
    assert "does not load as a radiology-ner bundle" in capsys.readouterr().err


def test_a_token_across_two_read_chunks_is_found(tmp_path):
    path = tmp_path / "big.bin"
    path.write_bytes(b"\0" * (SCAN_CHUNK - 10) + FAKE_TOKEN.encode() + b"\0" * 100)
    assert "access token" in secret_in(path)[0]
    path.write_bytes(b"\0" * (SCAN_CHUNK * 2 + 100))
    assert secret_in(path) is None


def test_link_out_of_the_folder_is_refused(model_dir, tmp_path, capsys):
    outside = tmp_path / "elsewhere.txt"
    outside.write_text("not for the Hub\n", encoding="utf-8")
    (model_dir / "inside_link.json").symlink_to(model_dir / "config.json")
    assert main(["model", "--model_dir", str(model_dir), "--repo_id", "org/m", "--dry_run"]) == 0
    capsys.readouterr()
    (model_dir / "notes.txt").symlink_to(outside)
    assert main(["model", "--model_dir", str(model_dir), "--repo_id", "org/m", "--dry_run"]) == 2
    err = capsys.readouterr().err
    assert "notes.txt is a link to" in err and "outside" in err


def test_link_to_a_folder_out_of_the_folder_is_refused(space_dir, tmp_path, capsys):
    (tmp_path / "home" / ".ssh").mkdir(parents=True)
    (space_dir / "assets").symlink_to(tmp_path / "home")
    argv = ["space", "--space_dir", str(space_dir), "--repo_id", "org/demo", "--model_id", "org/m", "--dry_run"]
    assert main(argv) == 2
    assert "assets is a link to" in capsys.readouterr().err
