"""End to end: `dml_train` killed for real (SIGKILL) after its first checkpoint, then `dml_train --resume`, ends
where the same run uninterrupted ends: the same metrics, history, best epoch and weights, bit for bit, on the CPU.

The data: twelve of scikit-learn's digits per class written as PNGs in three groups (train, valid, test), so that the
run picks its best epoch on the validation group, as the Omniglot default does. The two runs go side by side, then
the resume and a refusal (an option that differs from the run's) side by side.
"""
import json, os, shutil, signal, subprocess, sys, time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore::FutureWarning"}
ENV.pop("DML_NB_DEBUG", None)
GROUPS = {"train": "012467", "valid": "35", "test": "89"}

def dml_train(*args) -> list:
    "The command line of the installed dml_train with `args`."
    path = shutil.which("dml_train", path=str(Path(sys.executable).parent)) or shutil.which("dml_train")
    if path is None: pytest.fail("console script dml_train is not installed: run pip install -e .")
    return [path, *map(str, args)]

def finish(proc:subprocess.Popen, timeout:int=300) -> subprocess.CompletedProcess:
    out, err = proc.communicate(timeout=timeout)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)

def start(*args) -> subprocess.Popen:
    return subprocess.Popen(dml_train(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)

def ok(proc:subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, f"{' '.join(proc.args)} failed with status {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    return proc

def user_error(proc:subprocess.CompletedProcess, text:str):
    "A user error: status 1, no traceback, one `dml_train: error:` line containing `text`."
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, f"status {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    errors = [line for line in proc.stderr.splitlines() if ": error: " in line]
    assert len(errors) == 1 and text in errors[0], proc.stderr

def write_digits(folder:Path, per_class:int=12) -> Path:
    from sklearn.datasets import load_digits
    digits = load_digits()
    for group, names in GROUPS.items():
        for name in names:
            (folder/group/name).mkdir(parents=True)
            images = digits.images[digits.target == int(name)][:per_class]
            for i, image in enumerate(images):
                Image.fromarray((image * 255 / 16).astype(np.uint8)).save(folder/group/name/f"{name}_{i:02d}.png")
    return folder

def kill_after_first_checkpoint(proc:subprocess.Popen, run:Path, timeout:float=300) -> int:
    "SIGKILL `proc` as soon as its first checkpoint exists (it appears whole: it is renamed into place); the epoch it holds."
    checkpoint, end = run/"checkpoint"/"checkpoint.pth", time.time() + timeout
    while not checkpoint.is_file():
        if proc.poll() is not None: pytest.fail(f"the run ended before it could be killed:\n{finish(proc).stderr}")
        if time.time() > end: proc.kill(); pytest.fail("no checkpoint appeared")
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    return torch.load(checkpoint, map_location="cpu", weights_only=False)["epoch"]

def test_killed_run_resumes_to_the_same_result(tmp_path):
    data = write_digits(tmp_path/"data")
    options = ["--data", data, "--valid_groups", "valid", "--test_groups", "test", "--epochs", 3, "--bs", 12,
               "--m_per_class", 4, "--no-plots"]
    full, killed = tmp_path/"runs"/"full", tmp_path/"runs"/"killed"
    first = start(*options, "--out", full)
    epoch = kill_after_first_checkpoint(start(*options, "--out", killed), killed)
    assert epoch < 2, "killed after the last epoch: nothing left to resume"
    # what the kill left: the checkpoint folder, no finished run
    assert not (killed/"run.json").exists()
    assert {"checkpoint.pth", "options.json", "split.json", "history.csv", "best_epoch.pth"} <= {p.name for p in (killed/"checkpoint").iterdir()}
    assert not list((killed/"checkpoint").glob(".*.tmp")), "a temporary file of an atomic save is left"
    shutil.copytree(killed, tmp_path/"runs"/"copy")
    ok(finish(first))
    with ThreadPoolExecutor(2) as pool:  # (the other refusals are tested in the pipeline chapter, 13_pipeline)
        resumed = pool.submit(lambda: finish(start("--resume", killed)))
        differ = pool.submit(lambda: finish(start("--resume", tmp_path/"runs"/"copy", "--epochs", 4)))
        resumed, differ = resumed.result(), differ.result()
    assert f"resuming {killed} after epoch {epoch}" in ok(resumed).stdout
    user_error(differ, "these differ: --epochs 4 (the run has 3)")
    # the same result, exactly
    a, b = (json.loads((run/"metrics.json").read_text()) for run in (full, killed))
    assert a["trained"] == b["trained"] and a["best_epoch"] == b["best_epoch"]
    pd.testing.assert_frame_equal(pd.read_csv(full/"history.csv").drop(columns="time"), pd.read_csv(killed/"history.csv").drop(columns="time"))
    for x, y in zip(torch.load(full/"weights.pth").values(), torch.load(killed/"weights.pth").values()): assert torch.equal(x, y)
    assert (full/"split.json").read_text() == (killed/"split.json").read_text()
    # a finished run folder and nothing else: no checkpoint, no stage of the killed process left beside it
    assert sorted(p.name for p in killed.iterdir()) == ["history.csv", "index", "metrics.json", "run.json", "split.json", "weights.pth"]
    assert sorted(p.name for p in killed.parent.iterdir()) == ["copy", "full", "killed"]
