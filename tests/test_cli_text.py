"""The text commands end to end, through ``python -m rnnfast``: ``train-text``,
``generate``, ``demo``, resuming, Ctrl-C, and every way of giving them bad input."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import rnnfast_env, run_rnnfast
from rnnfast.models import CharLM

TEXT = ("It is a truth universally acknowledged, that a single man in possession of a "
        "good fortune, must be in want of a wife.\n") * 10     # 1180 characters
# 1062 characters to train on (the rest validates): 4 streams of 265, 27 batches an epoch

TINY = ["--hidden", "16", "--layers", "1", "--seq-len", "10", "--batch-size", "4"]
# Tiny models: on a busy machine, waking threads would cost more than the work.
ONE_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}


def rnnfast_cli(cwd, *args, timeout=120):
    return run_rnnfast(args, cwd, timeout=timeout, env={**os.environ, **ONE_THREAD})


def started_rnnfast(cwd, *args):
    """``python -m rnnfast *args`` running in the background, with the environment of
    ``run_rnnfast``: the same rnnfast as these tests, found from any directory."""
    return subprocess.Popen([sys.executable, "-m", "rnnfast", *map(str, args)], cwd=cwd,
                            env=rnnfast_env({**os.environ, **ONE_THREAD}),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def assert_one_line_error(result, status=1, *fragments):
    """A failure: ``status``, no traceback, one ``error:`` line naming ``fragments``."""
    assert result.returncode == status, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1, result.stderr
    for fragment in fragments:
        assert fragment in errors[0]


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "austen.txt"
    path.write_text(TEXT, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A checkpoint of a few steps of train-text, and its directory."""
    directory = tmp_path_factory.mktemp("trained")
    (directory / "austen.txt").write_text(TEXT, encoding="utf-8")
    result = rnnfast_cli(directory, "train-text", "austen.txt", *TINY, "--steps", "60",
                         "--output", "model.npz")
    assert result.returncode == 0, result.stderr
    return directory, result


def same_parameters(a, b):
    return all(np.array_equal(module_a.params[name], module_b.params[name])
               for module_a, module_b in ((a.rnn, b.rnn), (a.head, b.head))
               for name in module_a.params)


# ----------------------------------------------------------------------------- train-text

def test_train_text_reports_each_epoch_and_the_end(trained):
    directory, result = trained
    lines = result.stdout.splitlines()
    epochs = [line for line in lines if line.startswith("epoch ")]
    assert [line.split(":")[0] for line in epochs] == ["epoch 1.00, step 27",
                                                       "epoch 2.00, step 54"]
    assert all("train loss" in line and "validation loss" in line and "bits/char" in line
               for line in epochs)
    assert any(line.startswith("final: epoch 2.22, step 60: train loss") for line in lines)
    assert "checkpoint written to model.npz" in lines
    model = CharLM.load(directory / "model.npz")
    assert len(model.history.step_loss) == 60 and model.config()["hidden_size"] == 16
    assert model.history.evaluations[-1]["val_bpc"] < model.history.evaluations[0]["val_bpc"]


def test_generate_prints_the_prime_and_length_characters(trained):
    directory, _ = trained
    args = ["generate", "model.npz", "--prime", "It is a ", "--length", "50", "--seed", "3"]
    first, second = rnnfast_cli(directory, *args), rnnfast_cli(directory, *args)
    assert first.returncode == 0, first.stderr
    assert first.stdout == second.stdout
    assert first.stdout.startswith("It is a ") and first.stdout.endswith("\n")
    assert len(first.stdout) == len("It is a ") + 50 + 1
    other = rnnfast_cli(directory, *args[:-1], "4", "--temperature", "1.5", "--top-k", "5")
    assert other.returncode == 0 and other.stdout != first.stdout


def test_resume_continues_bit_for_bit(corpus, tmp_path):
    straight = rnnfast_cli(tmp_path, "train-text", corpus, *TINY, "--dropout", "0.2",
                           "--layers", "2", "--steps", "40", "--output", "straight.npz")
    assert straight.returncode == 0, straight.stderr
    first = rnnfast_cli(tmp_path, "train-text", corpus, *TINY, "--dropout", "0.2",
                        "--layers", "2", "--steps", "17", "--output", "split.npz")
    assert first.returncode == 0, first.stderr
    resumed = rnnfast_cli(tmp_path, "train-text", corpus, "--resume", "split.npz",
                          "--steps", "40", "--batch-size", "4")      # same value: allowed
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.startswith("Resuming split.npz at step 17")
    a, b = CharLM.load(tmp_path / "straight.npz"), CharLM.load(tmp_path / "split.npz")
    assert same_parameters(a, b) and a.history.step_loss == b.history.step_loss


def test_resume_refuses_other_model_or_training_options(trained):
    directory, _ = trained
    result = rnnfast_cli(directory, "train-text", "austen.txt", "--resume", "model.npz",
                         "--hidden", "32", "--seq-len", "12", "--output", "other.npz")
    assert_one_line_error(result, 1, "--hidden 32 differs from its 16",
                          "--seq-len 12 differs from its 10")
    assert not (directory / "other.npz").exists()


def test_resume_refuses_other_text(trained):
    directory, _ = trained
    (directory / "other.txt").write_text(TEXT + "More.\n", encoding="utf-8")
    result = rnnfast_cli(directory, "train-text", "other.txt", "--resume", "model.npz",
                         "--output", "other.npz")
    assert_one_line_error(result, 1, "text differs from the text the run was trained on")


def test_plot_draws_the_loss_curves(corpus, tmp_path):
    pytest.importorskip("matplotlib")
    result = rnnfast_cli(tmp_path, "train-text", corpus, *TINY, "--steps", "3", "--plot",
                         "loss.png", "--quiet")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "loss.png").read_bytes().startswith(b"\x89PNG")
    assert "epoch 1.00" not in result.stdout                  # --quiet: no epoch lines
    assert "final: epoch" in result.stdout


def test_ctrl_c_stops_writes_the_checkpoint_and_resumes(corpus, tmp_path):
    process = started_rnnfast(tmp_path, "train-text", corpus, *TINY, "--time", "300",
                              "--output", "stop.npz")
    try:
        for line in process.stdout:                 # trained an epoch: the loop is running
            if line.startswith("epoch 1.00"):
                break
        process.send_signal(signal.SIGINT)
        start = time.monotonic()
        stdout, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 130, stderr
    assert time.monotonic() - start < 30
    assert "Traceback" not in stderr
    assert "interrupted; checkpoint written to stop.npz" in stderr
    model = CharLM.load(tmp_path / "stop.npz")
    assert model.history.stop_reason == "interrupted"
    steps = len(model.history.step_loss)
    resumed = rnnfast_cli(tmp_path, "train-text", corpus, "--resume", "stop.npz", "--steps",
                          steps + 3)
    assert resumed.returncode == 0, resumed.stderr
    assert len(CharLM.load(tmp_path / "stop.npz").history.step_loss) == steps + 3


# ----------------------------------------------------------------------------- demo

def test_demo_trains_and_shows_samples(tmp_path):
    result = rnnfast_cli(tmp_path, "demo", "--time", "1", "--quiet", "--output", "demo.npz")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "documentation topics" in out or "docstrings" in out
    assert "bits per character on the training text" in out
    for temperature in ("0.5", "0.8", "1"):
        assert f"--- sample at temperature {temperature} ---\nThe " in out
    assert "Checkpoint: demo.npz" in out
    assert "rnnfast generate demo.npz --prime 'The ' --length 1000" in out
    more = rnnfast_cli(tmp_path, "generate", "demo.npz", "--length", "20", "--seed", "1")
    assert more.returncode == 0 and len(more.stdout) == 21


# ----------------------------------------------------------------------------- bad input

@pytest.fixture
def bad_files(tmp_path):
    (tmp_path / "empty.txt").write_bytes(b"")
    (tmp_path / "latin1.txt").write_bytes("caf\u00e9 au lait".encode("latin-1"))
    (tmp_path / "corrupt.npz").write_bytes(b"PK\x03\x04 this is no zip archive")
    return tmp_path


@pytest.mark.parametrize("args,status,fragments", [
    (["train-text", "missing.txt"], 1, ["No such file or directory: 'missing.txt'"]),
    (["train-text", "empty.txt"], 1, ["'empty.txt' is empty"]),
    (["train-text", "latin1.txt"], 1, ["'latin1.txt' is not UTF-8 text: invalid byte 0xe9"]),
    (["train-text", "empty.txt", "--no-such-option"], 2, ["unrecognized arguments"]),
    (["train-text", "empty.txt", "--hidden", "0"], 2, ["--hidden", "positive integer"]),
    (["train-text", "empty.txt", "--val-fraction", "1"], 2, ["--val-fraction"]),
    (["train-text", "empty.txt", "--cell", "transformer"], 2, ["--cell", "invalid choice"]),
    (["generate", "model.npz", "--temperature", "0"], 2, ["--temperature", "> 0"]),
    (["generate", "missing.npz"], 1, ["No such file or directory: 'missing.npz'"]),
    (["generate", "corrupt.npz"], 1, ["corrupt.npz"]),
    (["demo", "--time", "-1"], 2, ["--time"]),
])
def test_bad_input_gives_one_line_and_no_traceback(bad_files, args, status, fragments):
    assert_one_line_error(rnnfast_cli(bad_files, *args), status, *fragments)


def test_resume_from_a_missing_or_corrupt_checkpoint(corpus, bad_files):
    for checkpoint, fragment in (("missing.npz", "No such file or directory"),
                                 ("corrupt.npz", "corrupt.npz")):
        result = rnnfast_cli(bad_files, "train-text", corpus, "--resume", checkpoint)
        assert_one_line_error(result, 1, fragment)


def test_text_errors_that_need_a_checkpoint(trained):
    directory, _ = trained
    result = rnnfast_cli(directory, "generate", "model.npz", "--prime", "It is caf\u00e9 ")
    assert_one_line_error(result, 1, "prime holds 1 character(s) outside the vocabulary",
                          "U+00E9")
    result = rnnfast_cli(directory, "train-text", "austen.txt", *TINY, "--batch-size",
                         "5000", "--output", "big.npz")
    assert_one_line_error(result, 1, "too short for batch_size 5000")
    result = rnnfast_cli(directory, "train-text", "austen.txt", "--dropout", "0.5",
                         "--layers", "1")
    assert_one_line_error(result, 1, "--dropout 0.5 needs --layers 2 or more")
