"""End-to-end tests of dml_eval's query/gallery protocols: In-Shop's official query and gallery lists, and --query/--gallery.

One tiny training run on a replica of the In-Shop layout (query and gallery images of the same items in separate files,
as in the official list_eval_partition.txt); dml_eval then scores it on its own query/gallery split, on --query/--gallery
folders and CSV files, and refuses what cannot be scored.
"""
import json, re
from pathlib import Path
import numpy as np
import pytest
from dml_nb.test_utils import write_images
from scripts import check_user_error, ok, run, run_many, write_digits

TRAIN_ITEMS, TEST_ITEMS, DISTRACTOR = (1, 2, 3, 4), (11, 12, 13), 14

def make_inshop(root:Path) -> Path:
    "An In-Shop layout whose test items each have 1 query image and 2 gallery images (other files), plus a gallery-only item."
    lines = []
    for item in (*TRAIN_ITEMS, *TEST_ITEMS, DISTRACTOR):
        folder = f"img/MEN/Shirts/id_{item:08d}"
        write_images(root / folder, {".": 3}, ext=".jpg")
        roles = ["train"] * 3 if item in TRAIN_ITEMS else ["query", "gallery", "gallery"] if item in TEST_ITEMS else ["gallery"] * 3
        lines += [f"{folder}/{i:03d}.jpg id_{item:08d} {role}" for i, role in enumerate(roles)]
    (root / "Eval").mkdir()
    (root / "Eval" / "list_eval_partition.txt").write_text(f"{len(lines)}\nimage_name item_id evaluation_status\n" + "\n".join(lines) + "\n")
    return root

@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path: return tmp_path_factory.mktemp("eval_modes")

@pytest.fixture(scope="module")
def inshop(work) -> Path: return make_inshop(work / "inshop")

@pytest.fixture(scope="module")
def run_dir(work, inshop) -> Path:
    out = work / "runs" / "inshop"
    run("dml_train", "--data", "inshop", "--data_root", inshop, "--epochs", 1, "--bs", 8, "--m_per_class", 2, "--size", 16,
        "--embed_dim", 8, "--no-plots", "--out", out, cwd=work)
    return out

@pytest.fixture(scope="module")
def sets(work) -> dict:
    "--query and --gallery folders (digits 0, 1, 2: 2 queries and 5 gallery images each, other images) and the same as CSV files."
    query = write_digits(work / "query", {"zero": 0, "one": 1, "two": 2}, per_class=2)
    gallery = write_digits(work / "gallery", {"zero": 0, "one": 1, "two": 2, "three": 3}, per_class=5, offset=10)
    other = write_digits(work / "other", {"five": 5}, per_class=3)
    csvs = {}
    for name, folder in (("query", query), ("gallery", gallery)):
        rows = [f"{p.relative_to(work)},{p.parent.name}" for p in sorted(folder.rglob("*.png"))]
        csvs[name] = work / f"{name}.csv"
        csvs[name].write_text("path,label\n" + "\n".join(rows) + "\n")
    return dict(query=query, gallery=gallery, other=other, **{f"{k}_csv": v for k, v in csvs.items()})

@pytest.fixture(scope="module")
def results(run_dir, inshop, sets) -> dict:
    "The scripts as a user runs them (a few at a time); the other refusals are checked in Python, which is faster."
    return run_many({
        "own": ("dml_eval", run_dir, "--json"),
        "inshop": ("dml_eval", run_dir, "--data", "inshop", "--data_root", inshop, "--k", 1, 2),
        "folders": ("dml_eval", run_dir, "--query", sets["query"], "--gallery", sets["gallery"], "--k", 1, 2, "--json"),
        "only_query": ("dml_eval", run_dir, "--query", sets["query"]),
    })

def python_metrics(run_dir, query_paths, query_labels, gallery_paths, gallery_labels, ks):
    "What load_embedder + retrieval_metrics give in Python for the same query and gallery images."
    from dml_nb.inference import load_embedder
    from dml_nb.metrics import retrieval_metrics
    embedder = load_embedder(run_dir, "cpu")
    return retrieval_metrics(embedder.embed(query_paths), np.array(query_labels), embedder.embed(gallery_paths), np.array(gallery_labels), ks=ks)

def test_inshop_is_scored_query_vs_gallery(results, run_dir, inshop):
    "In-Shop's own evaluation is its official protocol: the 3 query images searched among the 9 gallery images (a distractor item among them)."
    from dml_nb.datasets import prepare_inshop
    own = json.loads(ok(results["own"]).stdout)
    assert own["protocol"] == "query/gallery retrieval, 3 queries against 9 gallery images"
    trained = json.loads((run_dir / "metrics.json").read_text())  # dml_train's own report scores the same protocol
    assert trained["protocol"].startswith("query/gallery retrieval, 3 queries against 9 gallery images")
    for key in ("precision_at_1", "mean_average_precision_at_r"): assert abs(trained["trained"][key] - own["metrics"][key]) < 1e-5, key
    assert (own["n_queries"], own["n_gallery"], own["n_images"]) == (3, 9, 12)
    items = prepare_inshop(inshop)
    query, gallery = items[items.split == "query"], items[items.split == "gallery"]
    expected = python_metrics(run_dir, query.path.tolist(), query.label.astype(str).tolist(), gallery.path.tolist(),
                              gallery.label.astype(str).tolist(), ks=(1, 2, 4, 8))
    for key, value in expected.items(): assert abs(own["metrics"][key] - value) < 1e-5, key
    # the leave-one-out score of the same 12 images differs: it is not what dml_eval reports
    from dml_nb.metrics import retrieval_metrics
    from dml_nb.inference import load_embedder
    test = items[items.split != "train"]
    loo = retrieval_metrics(load_embedder(run_dir, "cpu").embed(test.path.tolist()), test.label.astype(str).to_numpy(), ks=(1,))
    assert loo["mean_average_precision_at_r"] != pytest.approx(own["metrics"]["mean_average_precision_at_r"])
    table = ok(results["inshop"]).stdout
    assert "query/gallery retrieval, 3 queries against 9 gallery images" in table and "leave-one-out" not in table
    for row in ("raw pixels", "untrained", "trained"): assert row in table

def test_query_gallery_folders_and_csv(results, run_dir, sets):
    "--query/--gallery: the queries searched among the gallery, beside the two baselines; folders and CSV files give the same."
    from dml_nb.pipeline import evaluate_run, evaluation_report
    folders = json.loads(ok(results["folders"]).stdout)
    assert folders["protocol"] == "query/gallery retrieval, 6 queries against 20 gallery images"
    csv = evaluate_run(str(run_dir), query=str(sets["query_csv"]), gallery=str(sets["gallery_csv"]), k=(1, 2), device="cpu")
    for row in ("metrics", "raw_pixels", "untrained"):
        for key, value in folders[row].items(): assert csv[row][key] == pytest.approx(value, abs=1e-6), (row, key)
    query, gallery = sorted(sets["query"].rglob("*.png")), sorted(sets["gallery"].rglob("*.png"))
    expected = python_metrics(run_dir, query, [p.parent.name for p in query], gallery, [p.parent.name for p in gallery], ks=(1, 2))
    for key, value in expected.items(): assert abs(folders["metrics"][key] - value) < 1e-5, key
    assert set(folders["raw_pixels"]) == set(folders["untrained"]) == set(folders["metrics"])
    table = evaluation_report(csv)
    for text in ("query/gallery retrieval, 6 queries against 20 gallery images", "raw pixels", "untrained", "trained", "MAP@R"):
        assert text in table, text

def test_query_gallery_errors(results, run_dir, sets):
    "One line naming the problem: on the command line, and from evaluate_run for the other cases."
    from dml_nb.pipeline import evaluate_run
    check_user_error(results["only_query"], "give both --query and --gallery", prog="dml_eval")
    cases = {"give both --query and --gallery": dict(gallery=sets["gallery"]),
             "--query/--gallery replace --data": dict(data=sets["gallery"], query=sets["query"], gallery=sets["gallery"]),
             "--query and --gallery share no class": dict(query=sets["other"], gallery=sets["gallery"]),
             "no such folder or CSV file": dict(query=sets["query"], gallery=sets["gallery"].parent / "nowhere"),
             "is a file but not a .csv file": dict(query=sets["query_csv"], gallery=run_dir / "run.json")}
    for message, kwargs in cases.items():
        with pytest.raises(ValueError, match=re.escape(message)): evaluate_run(str(run_dir), device="cpu", **{k: str(v) for k, v in kwargs.items()})
    # a query whose class the gallery lacks is left out, with a warning that says so
    lone = write_digits(sets["query"].parent / "query_more", {"zero": 0, "nine": 9}, per_class=1)
    with pytest.warns(UserWarning, match="have no gallery image of their class"):
        result = evaluate_run(str(run_dir), query=str(lone), gallery=str(sets["gallery"]), k=(1,), device="cpu")
    assert result["protocol"] == "query/gallery retrieval, 2 queries against 20 gallery images"
