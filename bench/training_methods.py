"""Each training method of `dml_train --method` on the default Omniglot job, against the plain metric loss, on the
same budget: the same data split (train on the background alphabets, pick the epoch on Balinese, test on
Early_Aramaic, Greek and Korean), Conv-4, 64-d embeddings, the same epochs, batch size and learning rate, the
default loss (MultiSimilarity, with its miner) and the same seeds. Scores: leave-one-out MAP@R and precision@1 on
the test alphabets, and 20-way within-alphabet one-shot accuracy (400 episodes), beside raw pixels and the untrained
network of each run. The two-stream method is scored as its tester does (drawers 1-10 query drawers 11-20), so its
retrieval figures are not leave-one-out ones: its baselines are scored the same way, in its own rows.

    python bench/training_methods.py --seeds 0 1 2 --threads 1 --jobs 2

prints one JSON object (per method: the mean over seeds, the 95% t interval, and each seed's figures) and writes it
to bench/results/training_methods.json.
"""
from __future__ import annotations
import argparse, json, os, tempfile, time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
import numpy as np
from scipy import stats

os.environ.setdefault("HF_HUB_OFFLINE", "1"); os.environ.setdefault("MPLBACKEND", "Agg")
RESULTS = Path(__file__).resolve().parent / "results" / "training_methods.json"
METHODS = ("metric_loss_only", "train_with_classifier", "cascaded", "adversarial", "unsupervised", "two_stream")
SCORES = {"MAP@R": "mean_average_precision_at_r", "P@1": "precision_at_1", "20-way": "20_way"}

def one_run(method:str, seed:int, threads:int, epochs:int|None) -> dict:
    "Train and score one method with one seed; its test figures (trained, untrained, raw pixels) and seconds."
    import torch
    torch.set_num_threads(threads)
    from dml_nb.pipeline import train_run
    with tempfile.TemporaryDirectory() as work:
        start = time.time()
        run = train_run(method=method, seed=seed, epochs=epochs, out=str(Path(work) / "run"), plots=False)
        metrics = json.loads((run / "metrics.json").read_text())
    pick = lambda row: {short: row[key] for short, key in SCORES.items() if key in row}
    return dict(method=method, seed=seed, seconds=round(time.time() - start, 1), protocol=metrics["protocol"],
                trained=pick(metrics["trained"]), untrained=pick(metrics["untrained"]), raw_pixels=pick(metrics["raw_pixels"]))

def summary(values:list) -> dict:
    "Mean and 95% t interval half-width over seeds."
    values = np.asarray(values, float)
    half = float(stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1 else float("nan")
    return dict(mean=round(float(values.mean()), 4), ci95=round(half, 4))

def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=None, help="default: the default job's (4)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument("--jobs", type=int, default=2, help="runs side by side")
    args = parser.parse_args()
    cases = [(m, s) for m in args.methods for s in args.seeds]
    with ProcessPoolExecutor(args.jobs) as pool:
        runs = list(pool.map(one_run, *zip(*cases), [args.threads] * len(cases), [args.epochs] * len(cases)))
    result = {}
    for method in args.methods:
        mine = [r for r in runs if r["method"] == method]
        result[method] = dict(protocol=mine[0]["protocol"], seconds=summary([r["seconds"] for r in mine]), **{
            row: {score: summary([r[row][score] for r in mine]) for score in mine[0][row]} for row in ("trained", "untrained", "raw_pixels")},
            runs=mine)
    out = dict(budget="the default Omniglot job (Conv-4, 64-d, MultiSimilarity + miner, bs 64, lr 3e-3) "
                      f"for {args.epochs or 4} epochs; seeds {args.seeds}", methods=result)
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))

if __name__ == "__main__": main()
