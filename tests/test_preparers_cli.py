"""End to end: `dml_train --data tsinghua_dogs --data_root PATH` on a tiny replica of the official Tsinghua Dogs layout.

The replica has the files a user extracts from the official archives (TrainAndValList/train.lst and validation.lst,
with their byte-order mark and `.//<n>-n<breed id>-<breed>/<image>` lines, and low-resolution/ class folders), 8 breeds
of 6 tiny images each. The installed script runs as a subprocess, the way a user runs it; a user error (a folder
without the lists) runs beside the training run.
"""
import json
from pathlib import Path
from dml_nb.test_utils import write_images
from scripts import check_user_error, finish, start

BREEDS = [(1043, 1, "Shiba_Dog"), (212, 2, "French_bulldog"), (371, 27, "Malamute"), (205, 130, "Pug"),
          (300, 5, "Pekingese"), (250, 9, "Samoyed"), (420, 14, "Chow"), (199, 33, "Beagle")]

def make_tsinghua_replica(root:Path, per_class:int=6) -> Path:
    "TrainAndValList/{train,validation}.lst (UTF-8 with a byte-order mark, CRLF lines) and low-resolution/<n>-n<id>-<breed>/."
    folders = [f"{n}-n{i:06d}-{breed}" for n, i, breed in BREEDS]
    write_images(root / "low-resolution", dict.fromkeys(folders, per_class), ext=".jpg")
    (root / "TrainAndValList").mkdir()
    train = [f".//{f}/{i:03d}.jpg" for f in folders for i in range(per_class - 1)]
    (root / "TrainAndValList" / "train.lst").write_text("".join(f"{line}\r\n" for line in train), encoding="utf-8-sig")
    validation = [f".//{f}/{per_class - 1:03d}.jpg" for f in folders]
    (root / "TrainAndValList" / "validation.lst").write_text("".join(f"{line}\r\n" for line in validation), encoding="utf-8-sig")
    return root

def test_train_on_tsinghua_dogs(tmp_path):
    replica = make_tsinghua_replica(tmp_path / "tsinghua_dogs")
    (tmp_path / "not_dogs").mkdir()
    out = tmp_path / "runs" / "dogs"
    procs = {"train": start("dml_train", "--data", "tsinghua_dogs", "--data_root", replica, "--epochs", 1, "--bs", 8, "--m_per_class", 2,
                            "--size", 16, "--embed_dim", 8, "--no-plots", "--out", out, cwd=tmp_path),
             "no_lists": start("dml_train", "--data", "tsinghua_dogs", "--data_root", tmp_path / "not_dogs", "--out", tmp_path / "runs" / "no_lists", cwd=tmp_path)}
    results = {name: finish(proc) for name, proc in procs.items()}
    check_user_error(results["no_lists"], "Tsinghua Dogs: train.lst not found in", str(tmp_path / "not_dogs"))
    train = results["train"]
    assert train.returncode == 0, f"dml_train failed with status {train.returncode}:\n{train.stdout}\n{train.stderr}"
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["dogs"]  # the failed runs left nothing
    assert {"run.json", "weights.pth", "metrics.json", "history.csv", "index"} <= {p.name for p in out.iterdir()}
    info, metrics = json.loads((out / "run.json").read_text()), json.loads((out / "metrics.json").read_text())
    assert info["options"]["data"] == "tsinghua_dogs" and info["data_config"]["source"] == "tsinghua_dogs"
    # the DML protocol: half of the 8 breeds (all their images, from both lists) are test breeds that training never saw
    tested = {int(c) for c in metrics["classes"]}
    assert len(tested) == 4 and tested < {i for _, i, _ in BREEDS} and metrics["n_images"] == 24
    assert not tested & {int(c) for c in info["train_classes"]}
    assert 0 <= metrics["trained"]["precision_at_1"] <= 1
    assert f"run folder: {out}" in train.stdout
