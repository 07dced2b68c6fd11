"""End-to-end tests of the console scripts dml_train, dml_eval, dml_index and dml_query.

They run the *installed* scripts as subprocesses, the way a user does, on a tiny folder of class folders (scikit-learn's
digits written as PNGs, classes nested one level deep). One short training run is shared by the tests; the error
cases, which are independent of each other, run a few at a time, each in a process forked from one interpreter that
imported dml_nb once (scripts.run_many), to keep the file fast on two cores.
"""
import json, shutil
from pathlib import Path
import numpy as np
import pytest
import yaml
from PIL import Image
from scripts import check_user_error, finish, ok, run, run_many, start, write_digits

root = Path(__file__).resolve().parent.parent
# ---------------------------------------------------------------- data and the shared run

CLASSES = {"round/0": 0, "round/6": 6, "round/8": 8, "straight/1": 1, "straight/4": 4, "straight/7": 7}

@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cli")

@pytest.fixture(scope="module")
def gallery(work) -> Path:
    "A nested folder of class folders: 6 digit classes x 20 images."
    return write_digits(work / "gallery", CLASSES)

@pytest.fixture(scope="module")
def trained(work, gallery):
    "One short training run: the YAML file sets 3 epochs and 16-d embeddings, the command line --epochs 1 (it wins)."
    config = work / "train.yaml"
    config.write_text(yaml.safe_dump(dict(data=str(gallery), epochs=3, embed_dim=16, bs=30, m_per_class=10, size=16,
                                          preset="tiny_gray", valid_pct=0.5, seed=1)))
    proc = run("dml_train", "--config", config, "--epochs", "1", "--out", work / "runs" / "first", cwd=work)
    return work / "runs" / "first", proc

# ---------------------------------------------------------------- dml_train

def test_train_writes_a_complete_run_folder(trained):
    run_dir, proc = trained
    files = {p.name for p in run_dir.iterdir()}
    assert {"run.json", "weights.pth", "metrics.json", "history.csv", "umap.png", "retrieval.png", "index"} <= files, files
    assert [p.name for p in run_dir.parent.iterdir()] == ["first"]  # no temporary folder left next to it
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for key in ("precision_at_1", "r_precision", "mean_average_precision_at_r", "recall_at_1", "recall_at_8", "NMI", "AMI"):
        low = -1 if key == "AMI" else 0  # AMI is adjusted for chance: below 0 when clusters agree less than chance does
        for row in ("raw_pixels", "untrained", "trained"): assert low <= metrics[row][key] <= 1, (row, key)
    assert metrics["n_images"] == 60 and len(metrics["classes"]) == 3
    history = (run_dir / "history.csv").read_text().splitlines()
    assert history[0].split(",")[:3] == ["epoch", "train_loss", "valid_loss"] and len(history) == 2  # one epoch
    for picture in ("umap.png", "retrieval.png"):
        with Image.open(run_dir / picture) as image: assert min(image.size) > 200
    for text in ("unseen", "raw pixels", "untrained", "trained", "MAP@R", "R-precision", "P@1", "recall@4", "NMI", "AMI", "run folder"):
        assert text in proc.stdout, text

def test_config_file_and_flags(trained):
    "The YAML file's values apply, except where the command line gives the flag."
    info = json.loads((trained[0] / "run.json").read_text())
    assert info["options"]["epochs"] == 1  # the command line wins over the file's 3
    assert info["options"]["embed_dim"] == 16 and info["model_config"]["embed_dim"] == 16  # from the file
    assert info["data_config"]["size"] == 16 and info["options"]["seed"] == 1
    assert sorted(info["train_classes"] + info["valid_classes"]) == sorted(CLASSES)  # nested leaf folders are the classes

def test_recipes_are_valid():
    "Every recipe's keys are dml_train flags with values of the right type, and its loss and miner build."
    import inspect
    from dml_nb.cli import read_config
    from dml_nb.pipeline import train_run, build_metric_loss, TRAIN_DEFAULTS
    recipes = sorted((root / "recipes").glob("*.yaml"))
    assert {p.name for p in recipes} >= {"digits.yaml", "omniglot.yaml", "cub200_resnet50.yaml"}
    for recipe in recipes:
        options = read_config(recipe, train_run)
        build_metric_loss(options.get("loss", "multi_similarity"), options.get("loss_args"), options.get("miner"), options.get("miner_args"))
    defaults = {**{k: p.default for k, p in inspect.signature(train_run).parameters.items()}, **TRAIN_DEFAULTS["omniglot"]}
    omniglot = read_config(root / "recipes" / "omniglot.yaml", train_run)
    assert all(defaults[k] == v for k, v in omniglot.items() if k != "preset"), "omniglot.yaml must be the default job"

def test_default_job(tmp_path):
    "dml_train with no data flags: the bundled Omniglot, tested on held-out alphabets beside raw pixels and the untrained net."
    proc = run("dml_train", "--epochs", "1", "--no-plots", "--episodes", "100", "--out", tmp_path / "run", cwd=tmp_path)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert len(metrics["classes"]) == 86 and metrics["n_images"] == 1720 and metrics["best_epoch"] == 0
    for row in ("raw_pixels", "untrained", "trained"):
        assert {"5_way", "5_way_ci", "20_way", "20_way_ci", "mean_average_precision_at_r"} <= set(metrics[row]), row
    for text in ("86 test classes", "Early_Aramaic, Greek, Korean", "20-way one-shot", "raw pixels", "untrained", "trained", " ± "):
        assert text in proc.stdout, text
    # even one epoch beats both baselines, one-shot accuracy by more than the intervals
    assert metrics["verdict"].startswith("The trained network beats raw pixels and untrained"), metrics["verdict"]

# ---------------------------------------------------------------- dml_eval, dml_index, dml_query and the errors
# Everything below needs only the trained run: the independent commands run a few at a time.

@pytest.fixture(scope="module")
def after_training(work, trained, gallery):
    "Run dml_eval, dml_index, dml_query and every error case on the trained run; their results by name."
    run_dir = trained[0]
    bad = work / "bad"; bad.mkdir()
    (bad / "bad_key.yaml").write_text("epochs: 2\nlearning_rate: 0.1\n")
    (bad / "bad_value.yaml").write_text("epochs: two\n")
    (bad / "broken.png").write_text("this is not an image")
    (bad / "null_seed.yaml").write_text("seed: null\n")
    (bad / "latin1.yaml").write_bytes("epochs: 2  # première\n".encode("latin-1"))
    thesis = work / "thesis"; (thesis / "sub").mkdir(parents=True); (thesis / "thesis.txt").write_text("draft")
    old_run = bad / "old_run"; shutil.copytree(run_dir, old_run)
    info = json.loads((old_run / "run.json").read_text()); info["format_version"] = 999
    (old_run / "run.json").write_text(json.dumps(info))
    other_run = work / "runs" / "other"  # the same architecture with other weights: another fingerprint
    import torch
    from dml_nb.inference import save_run
    from dml_nb.models import embedder_from_config
    torch.manual_seed(123)
    save_run(other_run, embedder_from_config(info["model_config"]), info["data_config"])
    image, index_dir = next(gallery.rglob("*.png")), work / "gallery_index"
    valid_query = next((gallery / info["valid_classes"][0]).glob("*.png"))
    results = run_many({
        "eval_json": ("dml_eval", run_dir, "--data", gallery, "--k", "1", "2", "--json"),
        "eval_table": ("dml_eval", run_dir, "--data", gallery),
        "index": ("dml_index", run_dir, "--data", gallery, "--out", index_dir),
        "run_index_query": ("dml_query", run_dir, run_dir / "index", valid_query, "--json"),
        "unknown_loss": ("dml_train", "--data", gallery, "--loss", "multi_similarty", "--out", bad / "x1"),
        "unknown_miner": ("dml_train", "--data", gallery, "--miner", "hardest", "--out", bad / "x2"),
        "unknown_data": ("dml_train", "--data", bad / "no_such_folder", "--out", bad / "x3"),
        "unknown_arch": ("dml_train", "--data", gallery, "--arch", "resnet_nonexistent", "--size", "16", "--bs", "30",
                         "--out", bad / "deeper" / "x4"),
        "bad_config_key": ("dml_train", "--config", bad / "bad_key.yaml"),
        "bad_config_value": ("dml_train", "--config", bad / "bad_value.yaml"),
        "out_exists": ("dml_train", "--data", gallery, "--out", run_dir),
        "old_format": ("dml_eval", old_run, "--data", gallery),
        "other_model": ("dml_query", other_run, run_dir / "index", image),
        "broken_image": ("dml_query", run_dir, run_dir / "index", image, bad / "broken.png"),
        "missing_image": ("dml_query", run_dir, run_dir / "index", bad / "nothere.png"),
        "eval_own": ("dml_eval", run_dir, "--json"),
        "overwrite_user_folder": ("dml_train", "--data", gallery, "--overwrite", "--out", thesis),
        "out_is_cwd": ("dml_train", "--data", gallery, "--overwrite", "--out", "."),
        "index_into_data": ("dml_index", run_dir, "--data", gallery, "--out", gallery, "--overwrite"),
        "query_folder": ("dml_query", run_dir, run_dir / "index", gallery),
        "workers": ("dml_train", "--data", gallery, "--workers", "-1", "--out", bad / "x5"),
        "lr_inf": ("dml_train", "--data", gallery, "--lr", "inf", "--out", bad / "x6"),
        "bad_loss_args": ("dml_train", "--data", gallery, "--loss", "contrastive", "--loss_args", "pos_margin=abc", "--out", bad / "x7"),
        "null_seed": ("dml_train", "--config", bad / "null_seed.yaml"),
        "latin1_config": ("dml_train", "--config", bad / "latin1.yaml"),
    })
    # the gallery's index: queried, and a copy extended with two new classes
    ok(results["index"])
    queries = [gallery / "round" / "6" / "003.png", gallery / "straight" / "1" / "010.png"]
    new = write_digits(work / "new_classes", {"2": 2, "3": 3}, per_class=5)
    shutil.copytree(index_dir, work / "extended_index")
    results.update(run_many({
        "query_json": ("dml_query", run_dir, index_dir, *queries, "--k", "3", "--json"),
        "query_table": ("dml_query", run_dir, index_dir, queries[0], "--k", "2"),
        "add": ("dml_index", run_dir, "--data", new, "--out", work / "extended_index", "--add"),
    }))
    ok(results["add"])
    results["query_new"] = ok(run("dml_query", run_dir, work / "extended_index", new / "3" / "000.png", "--k", "1", "--json"))
    return dict(results=results, bad=bad, index_dir=index_dir, queries=queries, new=new, valid_query=valid_query)

def test_eval_matches_python(after_training, trained, gallery):
    "dml_eval --json prints the metrics that load_embedder + retrieval_metrics give in Python; without --json, a table."
    result = json.loads(ok(after_training["results"]["eval_json"]).stdout)
    held_out = json.loads((trained[0] / "run.json").read_text())["test_classes"]
    # the run's own data: only its 3 held-out classes are scored
    assert result["n_images"] == 60 and result["n_classes"] == 3 and result["scored"] == "the run's 3 held-out test classes"
    assert set(result["metrics"]) == {"precision_at_1", "r_precision", "mean_average_precision_at_r", "recall_at_1", "recall_at_2", "NMI", "AMI"}
    from dml_nb.inference import load_embedder
    from dml_nb.metrics import retrieval_metrics
    paths = sorted(str(p) for p in gallery.rglob("*.png") if Path(p).parent.relative_to(gallery).as_posix() in held_out)
    labels = np.unique([Path(p).parent.relative_to(gallery).as_posix() for p in paths], return_inverse=True)[1]
    expected = retrieval_metrics(load_embedder(trained[0], "cpu").embed(paths), labels, ks=(1, 2))
    for key, value in expected.items(): assert abs(result["metrics"][key] - value) < 1e-4, key
    table = ok(after_training["results"]["eval_table"]).stdout
    assert "60 images of 3 classes" in table and "MAP@R" in table and "recall@8" in table and "raw pixels" in table

def test_index_and_query(after_training, trained, gallery):
    results, index_dir, queries = after_training["results"], after_training["index_dir"], after_training["queries"]
    info = json.loads((index_dir / "index.json").read_text())
    assert info["count"] == 120 and sorted(info["meta"]["classes"]) == sorted(CLASSES)
    assert info["fingerprint"] == json.loads((trained[0] / "run.json").read_text())["fingerprint"]
    found = json.loads(ok(results["query_json"]).stdout)
    assert [r["image"] for r in found] == [str(q) for q in queries]
    for result, query in zip(found, queries):
        assert len(result["neighbours"]) == 3 and [n["rank"] for n in result["neighbours"]] == [1, 2, 3]
        nearest = result["neighbours"][0]
        assert nearest["path"] == str(query) and abs(nearest["similarity"] - 1) < 1e-4  # a gallery image finds itself first
        assert nearest["label"] == query.parent.relative_to(gallery).as_posix()
        similarities = [n["similarity"] for n in result["neighbours"]]
        assert similarities == sorted(similarities, reverse=True)
    text = ok(results["query_table"]).stdout
    assert "query 1 of 1" in text and "predicted class:" in text and str(queries[0]) in text and "similarity" in text

def test_index_add_new_classes(work, after_training):
    "New classes join an index without retraining, and are found."
    info = json.loads((work / "extended_index" / "index.json").read_text())
    assert info["count"] == 130 and info["meta"]["classes"][-2:] == ["2", "3"]
    result = json.loads(after_training["results"]["query_new"].stdout)[0]
    assert result["predicted"] == "3" and result["neighbours"][0]["path"] == str(after_training["new"] / "3" / "000.png")

def test_run_index_is_queryable(after_training):
    "The run folder's own index/ holds the unseen classes' images and answers dml_query."
    result = json.loads(ok(after_training["results"]["run_index_query"]).stdout)[0]
    assert result["neighbours"][0]["path"] == str(after_training["valid_query"]) and len(result["neighbours"]) == 5

# ---------------------------------------------------------------- user errors: one line, status 1, nothing left behind

@pytest.mark.parametrize("case, contains", [
    ("unknown_loss", ["unknown loss 'multi_similarty'", "multi_similarity", "triplet_margin", "arc_face"]),
    ("unknown_miner", ["unknown miner 'hardest'", "batch_hard"]),
    ("unknown_data", ["is neither a data set (digits, omniglot, cub200, cars196, sop, inshop, ", "nor an existing folder"]),
    ("unknown_arch", ["unknown arch 'resnet_nonexistent'", "convnet2"]),
    ("bad_config_key", ["unknown key(s) learning_rate; valid keys:", "embed_dim", "epochs"]),
    ("bad_config_value", ["epochs: expected an integer, got 'two'"]),
    ("out_exists", ["already exists: choose another --out, or pass --overwrite"]),
    ("old_format", ["format_version 999"]),
    ("other_model", ["fingerprint", "rebuild the index"]),
    ("broken_image", ["broken.png"]),
    ("missing_image", ["not found", "nothere.png"]),
    ("overwrite_user_folder", ["--overwrite replaces only an empty folder or one this program wrote (with its run.json)"]),
    ("out_is_cwd", ["is the current folder or contains it"]),
    ("index_into_data", ["is or contains the data folder"]),
    ("query_folder", ["is a folder, not an image file"]),
    ("workers", ["--workers must be 0 (load in the main process) or more, got -1"]),
    ("lr_inf", ["--lr must be a positive finite number, got inf"]),
    ("bad_loss_args", ["fails on a test batch"]),
    ("null_seed", ["seed: null is not a value for this flag"]),
    ("latin1_config", ["latin1.yaml is not UTF-8 text"]),
])
def test_user_errors(after_training, case, contains):
    check_user_error(after_training["results"][case], *contains)

def test_user_files_survive(work, after_training, gallery):
    "Refused --overwrite and --out leave the user's folders as they were."
    assert (work / "thesis" / "thesis.txt").read_text() == "draft" and (work / "thesis" / "sub").is_dir()
    assert len(list(gallery.rglob("*.png"))) == 120 and not (gallery / "index.json").exists()

def test_eval_scores_own_held_out_classes(after_training, trained):
    "dml_eval without --data scores the run's own held-out classes only, beside the two baselines."
    result = json.loads(ok(after_training["results"]["eval_own"]).stdout)
    info = json.loads((trained[0] / "run.json").read_text())
    assert result["n_classes"] == 3 and result["n_images"] == 60 and result["scored"] == "the run's 3 held-out test classes"
    assert sorted(info["test_classes"]) == sorted(info["valid_classes"])
    assert {"raw_pixels", "untrained", "metrics", "verdict"} <= set(result)

def test_failed_runs_leave_nothing(after_training, trained):
    "Runs that fail after their folder was staged (unknown data or arch) remove it, and the parent folders they made."
    assert sorted(p.name for p in after_training["bad"].iterdir()) == ["bad_key.yaml", "bad_value.yaml", "broken.png", "latin1.yaml", "null_seed.yaml", "old_run"]
    assert sorted(p.name for p in trained[0].parent.iterdir()) == ["first", "other"]

def test_argparse_errors():
    "Unknown flags and badly typed values are argparse's errors (status 2, the usage and one error line)."
    proc = finish(start("dml_train", "--epochs", "two"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "--epochs" in proc.stderr.splitlines()[-1]
    proc = finish(start("dml_query", "--k", "3"))
    assert proc.returncode == 2 and "the following arguments are required: run_dir, index_dir, images" in proc.stderr
