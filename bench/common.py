"""Shared timing helpers for the benchmark scripts: they print JSON and are not tests.

`--cpu-time` (any script using `compare`): one torch thread, timed by the CPU time of that thread
(`time.thread_time`) instead of the wall clock. On a shared machine other processes steal wall-clock time from
whichever side happens to be running; the CPU time a thread itself used is far less affected, so small gaps
(5-10%) can be told from noise. Each row carries the 95% interval of the median paired ratio (bootstrap over the
alternated repeats).
"""
import json, random, statistics, sys, time
import torch

CPU_TIME = "--cpu-time" in sys.argv
if CPU_TIME: torch.set_num_threads(1)
clock = time.thread_time if CPU_TIME else time.perf_counter

def time_call(fn, repeats:int=10, warmup:int=2) -> float:
    "Median seconds of `fn()` over `repeats` runs after `warmup` runs (wall clock, or thread CPU time with --cpu-time)."
    for _ in range(warmup): fn()
    times = []
    for _ in range(repeats):
        start = clock(); fn(); times.append(clock() - start)
    return statistics.median(times)

def ratio_interval(ratios:list, level:float=0.95, draws:int=2000) -> list:
    "Bootstrap interval of the median of paired ratios."
    rng = random.Random(0)
    medians = sorted(statistics.median(rng.choices(ratios, k=len(ratios))) for _ in range(draws))
    return [round(medians[int(draws * (1 - level) / 2)], 3), round(medians[int(draws * (1 + level) / 2) - 1], 3)]

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
    paired = [a / b for a, b in zip(t_ours, t_theirs)]
    t_ours, t_theirs = statistics.median(t_ours), statistics.median(t_theirs)
    return dict(name=name, ours_s=round(t_ours, 6), reference_s=round(t_theirs, 6), ratio=round(t_ours / t_theirs, 3),
                paired_ratio=round(statistics.median(paired), 3), paired_ratio_95=ratio_interval(paired), **info)

def emit(rows, **meta):
    "Print the results as one JSON document with the torch version and thread count."
    json.dump(dict(torch=torch.__version__, threads=torch.get_num_threads(), clock="thread CPU time" if CPU_TIME else "wall clock",
                   **meta, results=rows), sys.stdout, indent=1)
    print()

def bench_class_losses(ours_module, names, benchmark:str):
    "Time the losses `names` that learn per-class vectors (100 classes, 512-d) against PML's, with PML's weights copied into ours."
    from pytorch_metric_learning import losses as pml
    quick = "--quick" in sys.argv
    rows = []
    for batch_size in ((256,) if quick else (256, 1024)):
        torch.manual_seed(0)
        embeddings, labels = torch.randn(batch_size, 512), torch.randint(0, 100, (batch_size,))
        for name in names:
            theirs = getattr(pml, name)(num_classes=100, embedding_size=512)
            mine = getattr(ours_module, name)(num_classes=100, embedding_size=512)
            mine.load_state_dict(theirs.state_dict())
            assert torch.allclose(mine(embeddings, labels), theirs(embeddings, labels), rtol=1e-4, atol=1e-4), name
            rows.append(compare(name, fwd_bwd(mine, embeddings, labels), fwd_bwd(theirs, embeddings, labels),
                                repeats=3 if quick else (30 if CPU_TIME else 10), batch_size=batch_size, embedding_size=512, num_classes=100))
    emit(rows, benchmark=benchmark)
