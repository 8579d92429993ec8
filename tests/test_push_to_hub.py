"""push_to_hub.py on real tiny folders: dry-run plans, the checks that refuse a folder, and the offline error."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time

import pytest
from huggingface_hub import DatasetCard

from hf_pipeline.publish_files import human_size
from push_to_hub import main

from .helpers import FAKE_TOKEN, REPO, SPACE_README


def files_of(folder):
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def assert_plan_lists_every_file(out, folder):
    files = files_of(folder)
    for relative in files:
        assert f"{human_size((folder / relative).stat().st_size)}  {relative}\n" in out
    total = sum((folder / relative).stat().st_size for relative in files)
    assert f"total:      {len(files)} files, {human_size(total)}" in out


def test_model_dry_run_prints_the_plan(model_dir, capsys):
    assert main(["model", "--model_dir", str(model_dir), "--repo_id", "org/radiology-ner", "--dry_run"]) == 0
    out = capsys.readouterr().out
    assert "Dry run, nothing is sent" in out
    assert "repo:       org/radiology-ner (model)" in out
    assert "visibility: private (the default for models: one trained on clinical text can reproduce it" in out
    assert "revision:   main" in out
    assert_plan_lists_every_file(out, model_dir)
    assert "layer_2/model.safetensors" in out and "radiology_ner.py" in out


def test_shared_bundle_dry_run_and_its_missing_module(shared_bundle, tmp_path, capsys):
    folder = shutil.copytree(shared_bundle, tmp_path / "shared")
    assert main(["model", "--model_dir", str(folder), "--repo_id", "org/shared", "--dry_run"]) == 0
    out = capsys.readouterr().out
    assert "words.py" in out and "radiology_ner.py" in out and "layer_2" not in out
    (folder / "words.py").unlink()
    assert main(["model", "--model_dir", str(folder), "--repo_id", "org/shared", "--dry_run"]) != 0
    assert "words.py is missing: radiology_ner.py imports it" in capsys.readouterr().err


def test_model_dry_run_private_branch_and_ignored_files(model_dir, capsys):
    (model_dir / "__pycache__").mkdir()
    (model_dir / "__pycache__" / "radiology_ner.cpython-311.pyc").write_bytes(b"\0")
    (model_dir / "checkpoint-10").mkdir()
    (model_dir / "checkpoint-10" / "trainer_state.json").write_text("{}", encoding="utf-8")
    argv = ["model", "--model_dir", str(model_dir), "--repo_id", "org/m", "--private", "--revision", "v1", "--dry_run"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "visibility: private" in out and "revision:   v1" in out
    assert "__pycache__" not in out and "checkpoint-10" not in out


def test_model_dry_run_in_a_subprocess(model_dir):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    command = [
        sys.executable,
        "push_to_hub.py",
        "model",
        "--model_dir",
        str(model_dir),
        "--repo_id",
        "org/m",
        "--dry_run",
    ]
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert_plan_lists_every_file(result.stdout, model_dir)


def test_dataset_dry_run_is_private_by_default(dataset_dir, capsys):
    assert main(["dataset", "--dataset_dir", str(dataset_dir), "--repo_id", "org/nubes-layered", "--dry_run"]) == 0
    captured = capsys.readouterr()
    assert "repo:       org/nubes-layered (dataset)" in captured.out and "visibility: private" in captured.out
    assert_plan_lists_every_file(captured.out, dataset_dir)
    assert "data/train-00000-of-00001.parquet" in captured.out
    assert "warning" not in captured.err


def test_dataset_public_warns(dataset_dir, capsys):
    argv = ["dataset", "--dataset_dir", str(dataset_dir), "--repo_id", "org/nubes-layered", "--public", "--dry_run"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "visibility: public" in captured.out
    assert "warning:" in captured.err and "data-use agreement" in captured.err


def test_dataset_card_metadata(dataset_dir):
    data = DatasetCard.load(dataset_dir / "README.md").data
    assert data.task_categories == ["token-classification"]
    assert data.configs[0]["data_files"][0]["split"] == "train"
    features = {feature["name"]: feature for feature in data.dataset_info["features"]}
    names = features["ner_tags_1"]["list"]["class_label"]["names"]
    assert names["0"] == "O" and all(label[:2] in ("B-", "I-") for label in list(names.values())[1:])


@pytest.mark.parametrize(
    ("option", "value", "problem"),
    [
        ("--repo_id", "org/a/b", "a local path, not a Hub repo id"),
        ("--repo_id", "org/na me", "not a Hub repo id"),
        ("--model_id", "runs/tiny/model", "a local path, not a Hub repo id; the Space downloads its model"),
        ("--model_id", "C:\\models\\x", "a local path, not a Hub repo id"),
    ],
)
def test_a_repo_id_or_model_id_that_is_no_hub_id_is_refused(space_dir, capsys, option, value, problem):
    argv = {"--repo_id": "org/demo", "--model_id": "org/radiology-ner"} | {option: value}
    assert main(["space", "--space_dir", str(space_dir), *[p for pair in argv.items() for p in pair], "--dry_run"]) == 2
    assert capsys.readouterr().err.startswith(f"error: {option} {value}: {problem}")


def test_space_dry_run_sets_model_id(space_dir, capsys):
    argv = ["space", "--space_dir", str(space_dir), "--repo_id", "org/demo", "--model_id", "org/radiology-ner"]
    assert main([*argv, "--dry_run"]) == 0
    out = capsys.readouterr().out
    assert "repo:       org/demo (space)" in out
    assert "MODEL_ID=org/radiology-ner" in out
    assert_plan_lists_every_file(out, space_dir)


def test_bundle_missing_layer_weights_is_refused(model_dir, capsys):
    (model_dir / "layer_2" / "model.safetensors").unlink()
    assert main(["model", "--model_dir", str(model_dir), "--repo_id", "org/m", "--dry_run"]) == 2
    assert "layer_2/model.safetensors is missing" in capsys.readouterr().err


@pytest.mark.parametrize("names", [["eval.parquet"], ["train/report.txt", "train/report.ann"], ["data.jsonl"]])
def test_model_folder_with_training_data_is_refused(model_dir, capsys, names):
    for name in names:
        (model_dir / name).parent.mkdir(exist_ok=True)
        (model_dir / name).write_text("x", encoding="utf-8")
    assert main(["model", "--model_dir", str(model_dir), "--repo_id", "org/m", "--dry_run"]) == 2
    err = capsys.readouterr().err
    assert "training data" in err and all(name in err for name in names)


def test_file_with_a_token_is_refused_without_echoing_it(model_dir, capsys):
    (model_dir / "notes.md").write_text(f"HF_TOKEN={FAKE_TOKEN}\n", encoding="utf-8")
    assert main(["model", "--model_dir", str(model_dir), "--repo_id", "org/m", "--dry_run"]) == 2
    captured = capsys.readouterr()
    assert "notes.md" in captured.err and "access token" in captured.err
    assert FAKE_TOKEN not in captured.out + captured.err


@pytest.mark.parametrize("name", [".env", "deploy.pem", "id_rsa", ".netrc"])
def test_secret_files_are_refused(space_dir, capsys, name):
    (space_dir / name).write_text("secret\n", encoding="utf-8")
    argv = ["space", "--space_dir", str(space_dir), "--repo_id", "org/demo", "--model_id", "org/m", "--dry_run"]
    assert main(argv) == 2
    assert name in capsys.readouterr().err


def test_git_checkout_is_refused(space_dir, capsys):
    (space_dir / ".git").mkdir()
    argv = ["space", "--space_dir", str(space_dir), "--repo_id", "org/demo", "--model_id", "org/m", "--dry_run"]
    assert main(argv) == 2
    assert ".git" in capsys.readouterr().err


def test_broken_card_yaml_is_refused(model_dir, capsys):
    (model_dir / "README.md").write_text("---\nlanguage: [es\n---\n\ncard\n", encoding="utf-8")
    assert main(["model", "--model_dir", str(model_dir), "--repo_id", "org/m", "--dry_run"]) == 2
    assert "README.md" in capsys.readouterr().err


def test_dataset_without_configs_is_refused(dataset_dir, tmp_path, capsys):
    folder = shutil.copytree(dataset_dir, tmp_path / "ds")
    (folder / "README.md").write_text("---\nlicense: other\n---\n\ndata\n", encoding="utf-8")
    assert main(["dataset", "--dataset_dir", str(folder), "--repo_id", "org/d", "--dry_run"]) == 2
    assert "configs" in capsys.readouterr().err


def test_space_without_gradio_sdk_is_refused(space_dir, capsys):
    (space_dir / "README.md").write_text(SPACE_README.replace("sdk: gradio", "sdk: docker"), encoding="utf-8")
    argv = ["space", "--space_dir", str(space_dir), "--repo_id", "org/demo", "--model_id", "org/m", "--dry_run"]
    assert main(argv) == 2
    assert "sdk: gradio" in capsys.readouterr().err


def test_offline_push_fails_fast_with_a_clear_error(model_dir):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_TOKEN": FAKE_TOKEN}
    command = [sys.executable, "push_to_hub.py", "model", "--model_dir", str(model_dir), "--repo_id", "org/m"]
    start = time.monotonic()
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert time.monotonic() - start < 10
    assert result.returncode == 1
    assert "HF_HUB_OFFLINE=1 is set: unset it to publish, or use --dry_run" in result.stderr
    assert FAKE_TOKEN not in result.stdout + result.stderr


# --- visibility ---------------------------------------------------------------------------------------------------


def test_model_public_says_so_and_warns(model_dir, capsys):
    assert main(["model", "--model_dir", str(model_dir), "--repo_id", "org/m", "--public", "--dry_run"]) == 0
    captured = capsys.readouterr()
    assert "visibility: public (--public was given)" in captured.out
    assert "warning:" in captured.err and "reproduce pieces of them" in captured.err


def test_space_is_public_unless_private(space_dir, capsys):
    argv = ["space", "--space_dir", str(space_dir), "--repo_id", "org/demo", "--model_id", "org/m", "--dry_run"]
    assert main(argv) == 0
    assert "visibility: public (the default for Spaces: the demo holds code, no data" in capsys.readouterr().out
    assert main([*argv, "--private"]) == 0
    assert "visibility: private (--private was given)" in capsys.readouterr().out


def test_private_and_public_together_is_a_usage_error(model_dir):
    with pytest.raises(SystemExit) as exit_info:
        main(["model", "--model_dir", str(model_dir), "--repo_id", "org/m", "--private", "--public", "--dry_run"])
    assert exit_info.value.code == 2


# --- the Hub: offline, and a server that never answers -------------------------------------------------------------


def hub_env(**extra: str) -> dict[str, str]:
    """The environment of a push that may use the network: offline switches and proxies removed."""
    dropped = {"HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"}
    env = {name: value for name, value in os.environ.items() if name.upper() not in dropped}
    loopback = "127.0.0.1,localhost"
    return {**env, "NO_PROXY": loopback, "no_proxy": loopback, "HF_TOKEN": FAKE_TOKEN, **extra}


def test_offline_error_names_the_variable_that_is_set(model_dir):
    command = [sys.executable, "push_to_hub.py", "model", "--model_dir", str(model_dir), "--repo_id", "org/m"]
    result = subprocess.run(
        command, cwd=REPO, env=hub_env(TRANSFORMERS_OFFLINE="1"), capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1
    assert "TRANSFORMERS_OFFLINE=1 is set: unset it to publish" in result.stderr
    assert "HF_HUB_OFFLINE" not in result.stderr


class SilentHub:
    """A real HTTP server on loopback: it answers the reachability probe (HEAD) and never answers anything else."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.server.getsockname()[1]}"
        self.requests: list[str] = []
        self.held: list[socket.socket] = []
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self) -> None:
        while True:
            try:
                connection, _ = self.server.accept()
            except OSError:  # closed
                return
            connection.settimeout(10)
            head = b""
            while b"\r\n\r\n" not in head and (chunk := connection.recv(65536)):
                head += chunk
            self.requests.append(head.split(b"\r\n", 1)[0].decode("latin-1"))
            if head.startswith(b"HEAD "):
                connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                connection.close()
            else:
                self.held.append(connection)  # accepted, read, never answered

    def close(self) -> None:
        self.server.close()
        for connection in self.held:
            connection.close()


@pytest.fixture
def silent_hub():
    hub = SilentHub()
    yield hub
    hub.close()


def test_a_hub_that_never_answers_gives_up_after_the_timeout(space_dir, silent_hub):
    argv = ["space", "--space_dir", str(space_dir), "--repo_id", "org/demo", "--model_id", "org/m", "--timeout", "2"]
    start = time.monotonic()
    result = subprocess.run(
        [sys.executable, "push_to_hub.py", *argv],
        cwd=REPO,
        env=hub_env(HF_ENDPOINT=silent_hub.url),
        capture_output=True,
        text=True,
        timeout=90,
    )
    elapsed = time.monotonic() - start
    assert any(line.startswith("POST /api/repos/create") for line in silent_hub.requests), silent_hub.requests
    assert result.returncode == 1, result.stderr
    assert "POST" in result.stderr and "/api/repos/create got no answer within 2 s" in result.stderr
    assert "--timeout" in result.stderr and "Traceback" not in result.stderr
    assert FAKE_TOKEN not in result.stdout + result.stderr
    assert elapsed < 60
