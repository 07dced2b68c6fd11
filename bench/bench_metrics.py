"""`retrieval_metrics` against pytorch-metric-learning's `AccuracyCalculator(k="max_bin_count")`, on the CPU.

Leave-one-out, 128-d clustered embeddings, N in (10k, 30k, 50k, 200k) x (10 classes, N/10 classes); metrics
precision_at_1, r_precision, mean_average_precision_at_r (NMI/AMI excluded: both run the same faiss k-means).
With 10 classes R_q is about N/10 and ours ranks candidates after one matrix product (no heap); with N/10 classes
R_q is about 10 and ours keeps faiss's heaps (PML's own search).
Each measurement runs in its own subprocess; its memory figure is the peak resident memory (psutil, sampled every
2 ms in a thread: it sees faiss's and torch's C++ allocations, which tracemalloc does not) above the resident memory
just before the call, once the embeddings exist. The "floor" is the bare N x N matrix product q @ x.T in blocks of 4096 queries
(torch, no top-k): the arithmetic every exact method must do; "half" is the same product over the blocks on and above
the diagonal only, the least a leave-one-out search can do, since the matrix is symmetric.
On a CUDA machine `--cuda` adds ours and both floors with the embeddings on the GPU (PML is not run there).
With 10 classes R = N/10, so both libraries need k = N/10 neighbours per query (20,000 at N = 200k): PML then holds
(N, k) int64 indices, float distances, float labels and float64 masks, O(N^2/10) memory; we hold (4096, k).
Usage: python bench/bench_metrics.py [--quick] [--sizes 10000,50000] [--classes few,many] [--timeout 1800] [--cuda]
"""
import json, subprocess, sys, time

METRICS = ("precision_at_1", "r_precision", "mean_average_precision_at_r")

def make(n, n_classes, seed=0):
    import torch
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, n_classes, (n,), generator=g)
    # clustered: class centres plus noise, so the metrics are far from 0 and from 1
    x = torch.randn(n_classes, 128, generator=g)[labels] + 2.0 * torch.randn(n, 128, generator=g)
    return x, labels

def child(which, n, n_classes):
    "Run one measurement; print JSON with seconds, peak RSS above baseline and the values."
    import torch
    from dml_nb.metrics import retrieval_metrics  # imports (fastai, faiss, sklearn) before the clock and the baseline
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
    import gc, threading, psutil
    device = torch.device("cuda" if which.endswith("_cuda") else "cpu")
    # numba's compiled code (the ranking, the symmetric search) is loaded, or compiled the first time after an edit,
    # before the clock: few classes take the ranking, many the symmetric search
    for n_warm, c_warm in ((5000, 5), (5000, 1000)): retrieval_metrics(*make(n_warm, c_warm), include=METRICS)
    x, labels = make(n, n_classes)
    x = x.to(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    gc.collect()
    proc, peak, done = psutil.Process(), [0], threading.Event()
    base = proc.memory_info().rss
    def sample():  # resident memory every 2 ms: sees faiss's and torch's C++ allocations, unlike tracemalloc
        while not done.is_set(): peak[0] = max(peak[0], proc.memory_info().rss); time.sleep(0.002)
    sampler = threading.Thread(target=sample, daemon=True); sampler.start()
    if device.type == "cuda": torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    if which.startswith("ours"):
        values = retrieval_metrics(x, labels, include=METRICS)
    elif which == "pml":
        values = AccuracyCalculator(include=METRICS, k="max_bin_count", device=torch.device("cpu")).get_accuracy(x, labels)
    elif which.startswith("half"):  # the blocks on and above the diagonal of the symmetric product
        values = {}
        with torch.no_grad():
            for s in range(0, n, 4096): (x[s:s + 4096] @ x[s:].T)
    else:  # the floor: every query against every reference, nothing else
        values = {}
        with torch.no_grad():
            for s in range(0, n, 4096): (x[s:s + 4096] @ x.T)
    sync()
    seconds = time.perf_counter() - start
    done.set(); sampler.join()
    peak_mb = max(peak[0] - base, 0) / 2**20 if device.type == "cpu" else torch.cuda.max_memory_allocated() / 2**20
    print(json.dumps(dict(seconds=seconds, peak_mb=peak_mb, values=values)))

def measure(which, n, n_classes, timeout):
    try:
        out = subprocess.run([sys.executable, __file__, "--child", which, str(n), str(n_classes)],
                             capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired: return dict(error=f"timed out after {timeout} s")
    if out.returncode != 0:
        return dict(error=f"exit code {out.returncode}" + (" (killed: out of memory?)" if out.returncode < 0 else "") + f": {out.stderr.strip()[-200:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])

def main():
    args = sys.argv[1:]
    if args and args[0] == "--child": return child(args[1], int(args[2]), int(args[3]))
    quick = "--quick" in args
    sizes = (2000, 5000) if quick else (10000, 30000, 50000, 200000)
    if "--sizes" in args: sizes = tuple(int(s) for s in args[args.index("--sizes") + 1].split(","))
    timeout = int(args[args.index("--timeout") + 1]) if "--timeout" in args else 1800
    kinds = args[args.index("--classes") + 1].split(",") if "--classes" in args else ["few", "many"]
    cuda = "--cuda" in args
    import torch, faiss, psutil
    ram_gb = psutil.virtual_memory().total / 2**30
    rows = []
    for n in sizes:
        for n_classes in [c for name, c in (("few", 10), ("many", n // 10)) if name in kinds]:
            print(n, n_classes, file=sys.stderr, flush=True)
            k = int(torch.bincount(make(n, n_classes)[1]).max()) - 1  # k = max_bin_count, set by the largest class
            row = dict(n=n, classes=n_classes, k_max_bin_count=k)
            # PML holds (n, k+1) int64 indices, float32 distances, float32 labels, float64 precisions and bool masks at once
            pml_gb = n * (k + 1) * 25 / 2**30
            res = {w: measure(w, n, n_classes, timeout) for w in ("floor", "half", "ours") + (("floor_cuda", "half_cuda", "ours_cuda") if cuda else ())}
            res["pml"] = (dict(error=f"skipped: needs about {pml_gb:.0f} GB (n x k x 25 bytes), this machine has {ram_gb:.0f} GB")
                          if pml_gb > 0.7 * ram_gb else measure("pml", n, n_classes, timeout))
            for w, r in res.items():
                row[f"{w}_s"] = round(r["seconds"], 3) if "seconds" in r else r["error"]
                row[f"{w}_peak_mb"] = round(r["peak_mb"], 1) if "peak_mb" in r else None
            if "values" in res["ours"]:
                row["ours_values"] = {k: round(v, 6) for k, v in res["ours"]["values"].items()}
            ok = all("seconds" in res[w] for w in ("ours", "pml", "floor"))
            if ok:
                row["same_values"] = all(abs(res["ours"]["values"][m] - res["pml"]["values"][m]) < 1e-6 for m in METRICS)
                row["max_abs_diff"] = max(abs(res["ours"]["values"][m] - res["pml"]["values"][m]) for m in METRICS)
                row["time_ratio_pml_over_ours"] = round(res["pml"]["seconds"] / res["ours"]["seconds"], 2)
                row["peak_mem_ratio_pml_over_ours"] = round(res["pml"]["peak_mb"] / max(res["ours"]["peak_mb"], 1), 2)
            if "seconds" in res["ours"] and "seconds" in res["floor"]:
                row["time_ratio_ours_over_floor"] = round(res["ours"]["seconds"] / res["floor"]["seconds"], 2)
            if "seconds" in res["ours"] and "seconds" in res["half"]:
                row["time_ratio_ours_over_half"] = round(res["ours"]["seconds"] / res["half"]["seconds"], 2)
            if cuda and all("seconds" in res[w] for w in ("ours_cuda", "floor_cuda")):
                row["cuda_ratio_ours_over_floor"] = round(res["ours_cuda"]["seconds"] / res["floor_cuda"]["seconds"], 2)
                if "values" in res["ours"]:
                    row["cuda_max_abs_diff_vs_cpu"] = max(abs(res["ours_cuda"]["values"][m] - res["ours"]["values"][m]) for m in METRICS)
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    json.dump(dict(benchmark="retrieval_metrics vs PML AccuracyCalculator(k='max_bin_count'), leave-one-out, 128-d, CPU" + (" and CUDA" if cuda else ""),
                   torch=torch.__version__, faiss=faiss.__version__, threads=torch.get_num_threads(),
                   note="ratios > 1 mean we are faster / smaller; peak_mb is the peak resident memory above the level before the call (on CUDA: the peak GPU memory allocated)",
                   results=rows), sys.stdout, indent=1)
    print()

if __name__ == "__main__": main()
