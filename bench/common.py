"""Shared timing helpers for the benchmark scripts: they print JSON and are not tests."""
import json, statistics, sys, time
import torch

def time_call(fn, repeats:int=10, warmup:int=2) -> float:
    "Median wall-clock seconds of `fn()` over `repeats` runs after `warmup` runs."
    for _ in range(warmup): fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter(); fn(); times.append(time.perf_counter() - start)
    return statistics.median(times)

def fwd_bwd(loss, embeddings, labels, indices_tuple=None):
    "A closure running forward and backward of `loss` on a fresh leaf copy of `embeddings`."
    def run():
        x = embeddings.detach().clone().requires_grad_()
        out = loss(x, labels, indices_tuple) if indices_tuple is not None else loss(x, labels)
        out.backward()
    return run

def compare(name, ours, theirs, repeats=10, warmup=2, **info) -> dict:
    "Time two closures in the same run, alternating them so that machine load hits both alike; ratio = ours / theirs."
    for _ in range(warmup): ours(); theirs()
    t_ours, t_theirs = [], []
    for _ in range(repeats):
        t_ours.append(time_call(ours, 1, 0)); t_theirs.append(time_call(theirs, 1, 0))
    t_ours, t_theirs = statistics.median(t_ours), statistics.median(t_theirs)
    return dict(name=name, ours_s=round(t_ours, 6), reference_s=round(t_theirs, 6), ratio=round(t_ours / t_theirs, 3), **info)

def emit(rows, **meta):
    "Print the results as one JSON document with the torch version and thread count."
    json.dump(dict(torch=torch.__version__, threads=torch.get_num_threads(), **meta, results=rows), sys.stdout, indent=1)
    print()
