"""End to end: `dml_train --method NAME` for every training method, one short run each on digit images, and the
refusals that name the problem (an unknown method, an option the method does not have, a method the data cannot feed).

The two-stream run reads a CSV with a `stream` column (odd and even images of each class as the two streams), the
way a user with paired data (sketches and photos) gives it.
"""
import json
from pathlib import Path
import pytest
from scripts import check_user_error, ok, run_many, write_digits

FLAGS = ("--epochs", 1, "--bs", 16, "--m_per_class", 4, "--size", 16, "--preset", "tiny_gray", "--embed_dim", 12, "--no-plots")

@pytest.fixture(scope="module")
def results(tmp_path_factory) -> tuple:
    work = tmp_path_factory.mktemp("methods")
    folder = write_digits(work / "digits", {str(d): d for d in range(8)}, per_class=16)
    rows = [f"{p},{p.parent.name},{'odd' if int(p.stem) % 2 else 'even'}" for p in sorted(folder.rglob("*.png"))]
    (work / "streams.csv").write_text("path,label,stream\n" + "\n".join(rows) + "\n")
    train = lambda method, data=folder, *extra, out=None: ("dml_train", "--data", data, "--method", method, *FLAGS, "--out", work / (out or method), *extra)
    cases = {method: train(method) for method in ("metric_loss_only", "train_with_classifier", "adversarial", "unsupervised")}
    cases["cascaded"] = train("cascaded", folder, "--method_args", "cascade=2,filter_percentage=0.4")
    cases["two_stream"] = train("two_stream", work / "streams.csv")
    # the refusals, each with its own --out: a run holds its folder (for a resume) while it runs, so they must not share one
    cases["unknown"] = ("dml_train", "--data", folder, "--method", "siamese", "--out", work / "bad_unknown")
    cases["bad_option"] = ("dml_train", "--data", folder, "--method", "adversarial", "--method_args", "n_views=3", "--out", work / "bad_option")
    cases["no_streams"] = train("two_stream", folder, out="bad_no_streams")
    cases["proxy_unsupervised"] = train("unsupervised", folder, "--loss", "proxy_anchor", out="bad_proxy_unsupervised")
    return work, run_many(cases, workers=3)

@pytest.mark.parametrize("method", ["metric_loss_only", "train_with_classifier", "cascaded", "adversarial", "unsupervised", "two_stream"])
def test_every_method_trains_and_reports(results, method):
    "A complete run folder whose report and metrics name the method, and a model that dml_eval reloads from it."
    work, procs = results
    proc = ok(procs[method])
    assert f"method: {method}" in proc.stdout
    metrics = json.loads((work / method / "metrics.json").read_text())
    info = json.loads((work / method / "run.json").read_text())
    assert metrics["method"] == info["method"] == info["options"]["method"] == method
    for row in ("raw_pixels", "untrained", "trained"): assert 0 <= metrics[row]["mean_average_precision_at_r"] <= 1
    if method == "two_stream":  # its tester: one stream's images query the other's
        assert metrics["protocol"].startswith("query/gallery retrieval"), metrics["protocol"]
    else: assert metrics["protocol"].startswith("leave-one-out retrieval"), metrics["protocol"]
    if method == "cascaded": assert info["model_config"]["cascade"] == 2
    from dml_nb.inference import load_embedder
    embedder = load_embedder(work / method, device="cpu")
    images = sorted((work / "digits" / "3").glob("*.png"))[:2]
    assert embedder.embed(images).shape == (2, 12)

def test_method_refusals(results):
    work, procs = results
    check_user_error(procs["unknown"], "unknown --method 'siamese'; the training methods are: metric_loss_only (", "two_stream (", prog="dml_train")
    check_user_error(procs["bad_option"], "--method_args n_views: not an option of --method adversarial; its options are:", prog="dml_train")
    check_user_error(procs["no_streams"], "--method two_stream on --data", "no 'stream' column and no drawer", prog="dml_train")
    check_user_error(procs["proxy_unsupervised"], "--method unsupervised has no classes", prog="dml_train")
    assert not list(work.glob("bad*"))  # a refused run leaves nothing behind
