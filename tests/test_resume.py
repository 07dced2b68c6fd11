"""End to end: `dml_train` killed for real (SIGKILL) after its first checkpoint, then `dml_train --resume`, ends
where the same run uninterrupted ends: the same metrics, history, best epoch and weights, bit for bit, on the CPU.

The data: twelve of scikit-learn's digits per class written as PNGs in three groups (train, valid, test), so that the
run picks its best epoch on the validation group, as the Omniglot default does. The two runs go side by side, then
the resume and a refusal (an option that differs from the run's) side by side.
"""
import json, shutil, signal, subprocess, time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
import pandas as pd
import pytest
import torch
from scripts import check_user_error, finish, ok, start, write_digits

GROUPS = {"train": "012467", "valid": "35", "test": "89"}

def write_groups(folder:Path, per_class:int=12) -> Path:
    "Digit class folders under train/, valid/ and test/ group folders, as GROUPS says."
    classes = {f"{group}/{name}": int(name) for group, names in GROUPS.items() for name in names}
    return write_digits(folder, classes, per_class, file_name="{digit}_{i:02d}.png")

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
    data = write_groups(tmp_path/"data")
    options = ["--data", data, "--valid_groups", "valid", "--test_groups", "test", "--epochs", 3, "--bs", 12,
               "--m_per_class", 4, "--no-plots"]
    full, killed = tmp_path/"runs"/"full", tmp_path/"runs"/"killed"
    first = start("dml_train", *options, "--out", full)
    epoch = kill_after_first_checkpoint(start("dml_train", *options, "--out", killed), killed)
    assert epoch < 2, "killed after the last epoch: nothing left to resume"
    # what the kill left: the checkpoint folder, no finished run
    assert not (killed/"run.json").exists()
    assert {"checkpoint.pth", "options.json", "split.json", "history.csv", "best_epoch.pth"} <= {p.name for p in (killed/"checkpoint").iterdir()}
    assert not list((killed/"checkpoint").glob(".*.tmp")), "a temporary file of an atomic save is left"
    shutil.copytree(killed, tmp_path/"runs"/"copy")
    ok(finish(first))
    with ThreadPoolExecutor(2) as pool:  # (the other refusals are tested in the pipeline chapter, 13_pipeline)
        resumed = pool.submit(lambda: finish(start("dml_train", "--resume", killed)))
        differ = pool.submit(lambda: finish(start("dml_train", "--resume", tmp_path/"runs"/"copy", "--epochs", 4)))
        resumed, differ = resumed.result(), differ.result()
    assert f"resuming {killed} after epoch {epoch}" in ok(resumed).stdout
    check_user_error(differ, "these differ: --epochs 4 (the run has 3)")
    # the same result, exactly
    a, b = (json.loads((run/"metrics.json").read_text()) for run in (full, killed))
    assert a["trained"] == b["trained"] and a["best_epoch"] == b["best_epoch"]
    pd.testing.assert_frame_equal(pd.read_csv(full/"history.csv").drop(columns="time"), pd.read_csv(killed/"history.csv").drop(columns="time"))
    for x, y in zip(torch.load(full/"weights.pth").values(), torch.load(killed/"weights.pth").values()): assert torch.equal(x, y)
    assert (full/"split.json").read_text() == (killed/"split.json").read_text()
    # a finished run folder and nothing else: no checkpoint, no stage of the killed process left beside it
    assert sorted(p.name for p in killed.iterdir()) == ["history.csv", "index", "metrics.json", "run.json", "split.json", "weights.pth"]
    assert sorted(p.name for p in killed.parent.iterdir()) == ["copy", "full", "killed"]
