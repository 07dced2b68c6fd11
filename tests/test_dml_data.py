"""End-to-end tests of the console script dml_data, and of dml_train reading the CSV files it writes.

They run the *installed* scripts as subprocesses, the way a user does, on a tiny folder of class folders built here
(scikit-learn's digits as PNGs) with one enlarged copy of an image and one file that is not an image. The main jobs
(info; filters and a split, then dml_train on it) and two representative errors run as commands, together in one
fixture; the folds, the other
errors and --overwrite call the script's function in this process (the same code, from argument parsing to the
one-line error and exit status).
"""
import json, shutil, subprocess
from pathlib import Path
import imagehash
import pandas as pd
import pytest
from PIL import Image
from scripts import check_user_error, execute, ok, run_many, temporary_files, write_digits

def data_error(proc, *contains): check_user_error(proc, *contains, prog="dml_data")

CLASSES = {"round/0": 0, "round/6": 6, "round/8": 8, "straight/1": 1, "straight/4": 4, "straight/7": 7}
PER_CLASS = 20
INFO_COLUMNS = ["path", "label", "parent", "width", "height", "phash"]

@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("dml_data")

@pytest.fixture(scope="module")
def gallery(work) -> Path:
    "6 nested digit classes x 20 8x8 PNGs, plus a 16x16 copy of one image (a near-duplicate) and a broken file."
    folder = write_digits(work / "gallery", CLASSES, PER_CLASS)
    Image.open(folder / "round/6/003.png").resize((16, 16)).save(folder / "round/6/big_copy.png")
    (folder / "straight/1/broken.png").write_bytes(b"this is not a PNG file")
    return folder

@pytest.fixture(scope="module")
def results(work, gallery) -> dict:
    "Every independent dml_data command, run a few at a time; their results by name."
    out, bad = work / "out", work / "bad"
    bad.mkdir(); (bad / "existing.csv").write_text("keep me")
    jobs = {"info": (gallery, "--out", out / "info.csv"),
            "split": (gallery, "--out", work / "split.csv", "--min_size", "8", "--dedup_hamming", "2", "--split", "ratio", "--seed", "2"),
            "hamming": (gallery, "--out", bad / "hamming.csv", "--dedup_hamming", "65"),
            "strict": (gallery, "--out", bad / "strict.csv", "--strict")}
    return run_many({case: ("dml_data", *args) for case, args in jobs.items()}, workers=3)

def test_info_table(work, results):
    proc = ok(results["info"])
    table = pd.read_csv(work / "out" / "info.csv", dtype={"phash": str})
    assert list(table.columns) == INFO_COLUMNS
    assert len(table) == len(CLASSES) * PER_CLASS + 1  # every readable image, the copy included; the broken file left out
    assert sorted(table["label"].unique()) == sorted(CLASSES) and set(table["parent"]) == {"round", "straight"}
    assert not table["path"].str.contains("broken.png").any()
    for row in table.sample(5, random_state=0).itertuples():
        with Image.open(row.path) as image:  # absolute: the images do not lie under the CSV's folder
            assert (row.width, row.height) == image.size and row.phash == str(imagehash.phash(image))
    copy = table[table["path"].str.endswith("big_copy.png")].iloc[0]
    assert (copy.width, copy.height) == (16, 16)
    assert f"read {len(table) + 1} images of 6 classes" in proc.stdout
    assert "left out 1 unreadable image(s)" in proc.stdout and "straight/1/broken.png: UnidentifiedImageError" in proc.stdout
    assert proc.stderr.strip() == "", proc.stderr

def test_filter_split_then_train(work, results, tmp_path):
    """Filters and a class-disjoint split in one command, the CSV beside the data (relative paths); then dml_train --data
    split.csv from another folder. Near-duplicates within 2 bits: the enlarged copy differs from its original in 2 bits,
    the originals from each other in 4 or more, so exactly the copy goes."""
    proc, split_csv = ok(results["split"]), work / "split.csv"
    table = pd.read_csv(split_csv)
    assert list(table.columns) == INFO_COLUMNS + ["split"]
    assert len(table) == len(CLASSES) * PER_CLASS and not table["path"].str.endswith("big_copy.png").any()
    assert "size filter: removed 0 image(s)" in proc.stdout
    assert "removed 1 image(s):" in proc.stdout and "round/6/big_copy.png (round/6) = " in proc.stdout and "round/6/003.png (round/6)" in proc.stdout
    assert table["path"].str.startswith("gallery/").all()  # relative to the CSV's folder, where the images lie
    assert table.groupby("label")["split"].nunique().max() == 1  # whole classes on each side
    valid = sorted(table.loc[table["split"] == "valid", "label"].unique())
    assert len(valid) == 3 and "train: 3 classes, 60 images" in proc.stdout
    run_dir = tmp_path / "run"
    ok(execute("dml_train", "--data", split_csv, "--epochs", "1", "--embed_dim", "16", "--bs", "30", "--m_per_class", "10",
               "--size", "16", "--preset", "tiny_gray", "--no-plots", "--out", run_dir, cwd=tmp_path))
    run = json.loads((run_dir / "run.json").read_text())
    assert sorted(run["valid_classes"]) == valid and sorted(run["train_classes"]) == sorted(set(CLASSES) - set(valid))
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["n_images"] == 60 and 0 <= metrics["trained"]["precision_at_1"] <= 1

def in_process(*args) -> subprocess.CompletedProcess:
    "Run the dml_data script's function in this process (no Python start-up): its exit status, stdout and stderr."
    from dml_nb.cli import dml_data
    import contextlib, io
    out, err, status = io.StringIO(), io.StringIO(), 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try: dml_data([str(o) for o in args])
        except SystemExit as exit: status = exit.code
    return subprocess.CompletedProcess(["dml_data", *map(str, args)], status, out.getvalue(), err.getvalue())

def test_folds(work, gallery):
    "Class-disjoint folds with --fold: a fold column, each class in one fold, and fold 1's split column."
    proc = ok(in_process(gallery, "--out", work / "out" / "folds.csv", "--folds", "3", "--fold", "1", "--seed", "1"))
    folds = pd.read_csv(work / "out" / "folds.csv")
    assert list(folds.columns) == INFO_COLUMNS + ["fold", "split"]
    assert folds.groupby("label")["fold"].nunique().max() == 1 and sorted(folds["fold"].unique()) == [0, 1, 2]
    assert folds.groupby("fold")["label"].nunique().tolist() == [2, 2, 2]
    assert ((folds["fold"] == 1) == (folds["split"] == "valid")).all()
    assert "3 class-disjoint folds" in proc.stdout

def test_bad_input(work, results):
    "A threshold out of range fails with the valid range; a broken image is fatal with --strict; an existing file stays."
    data_error(results["hamming"], "--dedup_hamming must be from 0 to 64 (bits of the 64-bit perceptual hash), got 65")
    data_error(results["strict"], "unreadable image", "straight/1/broken.png", "leave out --strict")
    data_error(in_process(work / "gallery", "--out", work / "bad" / "existing.csv"),
                     "already exists: choose another --out, or pass --overwrite to replace it")
    assert (work / "bad" / "existing.csv").read_text() == "keep me"
    assert sorted(p.name for p in (work / "bad").iterdir()) == ["existing.csv"]  # no result and no temporary file of a failed run
    assert temporary_files(work) == []

@pytest.mark.parametrize("flags, contains", [
    (["--dedup_hamming", "-1"], ["--dedup_hamming must be from 0 to 64", "got -1"]),
    (["--min_size", "0"], ["--min_size must be 1 or more pixels, got 0"]),
    (["--min_size", "20", "--max_size", "10"], ["--min_size 20 is larger than --max_size 10"]),
    (["--split", "ratio", "--valid_pct", "1.5"], ["--valid_pct must be between 0 and 1 (exclusive)", "got 1.5"]),
    (["--split", "random"], ["--split must be one of ratio, count, frequency, got 'random'"]),
    (["--split", "count"], ["--split count needs --min_count, --max_count or both"]),
    (["--folds", "7"], ["--folds must be from 2 to 6 (the number of classes) for class-disjoint folds, got 7"]),
    (["--folds", "3", "--fold", "3"], ["--fold must be from 0 to 2 (one of the 3 folds), got 3"]),
    (["--split", "ratio", "--folds", "3"], ["--split and --folds exclude each other"]),
    (["--min_size", "100"], ["every image was unreadable or filtered out"]),
])
def test_flag_errors(work, gallery, flags, contains):
    "The script's function in this process: one `dml_data: error:` line naming the valid range, status 1, no file."
    out = work / "flags" / "out.csv"
    data_error(in_process(gallery, "--out", out, *flags), *contains)
    assert not out.parent.exists() or list(out.parent.iterdir()) == []

def test_sources_and_overwrite(work, gallery, results):
    "A missing source and a file that is not a CSV are named; --overwrite replaces an earlier result, here in place."
    for source, message in [(work / "no_such_folder", "no such folder or CSV file"), (gallery / "round/0/000.png", "is not a .csv file")]:
        data_error(in_process(source, "--out", work / "out" / "never.csv"), message)
    assert not (work / "out" / "never.csv").exists()
    ok(results["info"])
    again = shutil.copy(work / "out" / "info.csv", work / "out" / "again.csv")
    proc = ok(in_process(again, "--out", again, "--overwrite", "--max_size", "8"))  # a CSV in, replaced in place
    assert len(pd.read_csv(again)) == len(CLASSES) * PER_CLASS  # the 16 x 16 copy filtered out
    assert "size filter: removed 1 image(s)" in proc.stdout and "gallery/round/6/big_copy.png: 16 x 16" in proc.stdout

def test_argparse_error(gallery, work):
    "A badly typed value is argparse's error: status 2, the flag named, nothing written."
    proc = in_process(gallery, "--dedup_hamming", "four", "--out", work / "typed.csv")
    assert proc.returncode == 2 and "--dedup_hamming" in proc.stderr.splitlines()[-1] and not (work / "typed.csv").exists()
