"""`metric_learner` (fastai) against a plain PyTorch loop: the same model, data, loss, miner and optimiser, trained for
the same number of steps in one run, the two paths alternating so that machine load hits both alike. Prints JSON;
ratio = fastai / plain loop (goal: at most 1.10 on CPU).

    python bench/bench_learner.py                        # CPU: Conv-4 on 28-pixel grayscale images, batch 64
    python bench/bench_learner.py --arch resnet50 --size 224 --n_in 3 --bs 64 --steps 30 --bf16 --channels_last --device cuda

On a GPU the second form also reports images per second for both paths (ResNet-50 at 224 px, bf16, channels_last).
The data are random tensors held in memory on the device, so the measurement is the training loop itself (forward,
mining, loss, backward, optimiser step, and on the fastai path its callbacks), not image decoding. Both paths load
batches in the main process (`num_workers=0`): fastai's `DataLoaders` default is one worker process per core, which
for in-memory tensors only takes CPU from the training step (on 2 cores it made the fastai path 1.3x slower).
"""
import argparse, functools, json, sys, time
import torch
from torch.utils.data import DataLoader, TensorDataset
from fastai.data.core import DataLoaders
from fastai.optimizer import OptimWrapper, Adam
from dml_nb.core import seed_everything
from dml_nb.models import create_embedder
from dml_nb.losses import MultiSimilarityLoss, ProxyAnchorLoss
from dml_nb.miners import MultiSimilarityMiner
from dml_nb.learner import metric_learner
from common import emit

def make_data(n, n_classes, n_in, size, device):
    "Random images with labels, `n / n_classes` per class, on `device`."
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(n, n_in, size, size, generator=generator).to(device)
    return images, (torch.arange(n) % n_classes).to(device)

def make_parts(args, n_classes):
    "Model, loss and miner, identical for every call (fixed seed)."
    seed_everything(0)
    model = create_embedder(args.arch, embed_dim=args.embed_dim, n_in=args.n_in).to(args.device)
    if args.channels_last: model = model.to(memory_format=torch.channels_last)
    if args.loss == "multi_similarity": loss, miner = MultiSimilarityLoss(), MultiSimilarityMiner()
    else: loss, miner = ProxyAnchorLoss(n_classes, args.embed_dim), None
    return model, loss.to(args.device), miner

def run_plain(args, images, labels, n_classes):
    "The plain PyTorch loop: returns seconds for `args.steps` training steps."
    model, loss_func, miner = make_parts(args, n_classes)
    opt = torch.optim.Adam([*model.parameters(), *loss_func.parameters()], lr=1e-3)
    dl = DataLoader(TensorDataset(images, labels), batch_size=args.bs, shuffle=True, drop_last=True)
    model.train()
    start, step = time.perf_counter(), 0
    while step < args.steps:
        for xb, yb in dl:
            if args.channels_last: xb = xb.contiguous(memory_format=torch.channels_last)
            with torch.autocast(args.device, dtype=torch.bfloat16, enabled=args.bf16):
                embeddings = model(xb)
            tuples = miner(embeddings.detach(), yb) if miner is not None else None
            loss = loss_func(embeddings, yb, tuples)
            opt.zero_grad(); loss.backward(); opt.step()
            step += 1
            if step == args.steps: break
    if args.device == "cuda": torch.cuda.synchronize()
    return time.perf_counter() - start

def run_fastai(args, images, labels, n_classes, opt_func):
    "The same steps through `metric_learner(...).fit`: returns seconds for `args.steps` training steps."
    model, loss_func, miner = make_parts(args, n_classes)
    train = TensorDataset(images, labels)
    dls = DataLoaders.from_dsets(train, TensorDataset(images[:0], labels[:0]), bs=args.bs, device=args.device, drop_last=True,
                                 num_workers=0)  # as the plain loop: in-memory tensors need no worker processes
    learn = metric_learner(dls, model, loss_func, miner=miner, metrics=[], opt_func=opt_func, lr=1e-3)
    if args.bf16: learn.to_bf16()
    if args.channels_last:
        from fastai.callback.channelslast import ChannelsLast
        learn.add_cb(ChannelsLast())
    stop = _StopAfter(args.steps)  # one epoch is exactly `steps` batches: the (empty) validation never runs
    with learn.no_logging(), learn.no_bar():
        start = time.perf_counter()
        learn.fit(1, 1e-3, cbs=stop)
    if args.device == "cuda": torch.cuda.synchronize()
    assert stop.steps == args.steps, f"fastai ran {stop.steps} steps, not {args.steps}"
    return time.perf_counter() - start

from fastai.callback.core import Callback, CancelFitException
class _StopAfter(Callback):
    "Count the optimiser steps and stop the fit after `steps` of them."
    def __init__(self, steps): self.max_steps, self.steps = steps, 0
    def after_step(self):
        self.steps += 1
        if self.steps == self.max_steps: raise CancelFitException()

def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--arch", default="convnet4"); parser.add_argument("--size", type=int, default=28)
    parser.add_argument("--n_in", type=int, default=1); parser.add_argument("--embed_dim", type=int, default=64)
    parser.add_argument("--bs", type=int, default=64); parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--n_classes", type=int, default=32); parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--loss", default="multi_similarity", choices=["multi_similarity", "proxy_anchor"])
    parser.add_argument("--device", default="cpu"); parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--channels_last", action="store_true")
    args = parser.parse_args()
    images, labels = make_data(args.bs * args.steps,  # one epoch of `steps` batches
                                  args.n_classes, args.n_in, args.size, args.device)
    paths = {"plain loop (torch Adam)": lambda: run_plain(args, images, labels, args.n_classes),
             "metric_learner (torch Adam via OptimWrapper)": lambda: run_fastai(args, images, labels, args.n_classes,
                                                                               functools.partial(OptimWrapper, opt=torch.optim.Adam)),
             "metric_learner (fastai Adam)": lambda: run_fastai(args, images, labels, args.n_classes, Adam)}
    for run in paths.values(): run()  # warm-up: allocator, kernels, first-call imports
    times = {name: [] for name in paths}
    for _ in range(args.repeats):
        for name, run in paths.items(): times[name].append(run())
    plain = sorted(times["plain loop (torch Adam)"])[args.repeats // 2]
    rows = []
    for name, ts in times.items():
        median = sorted(ts)[args.repeats // 2]
        rows.append(dict(name=name, seconds=round(median, 3), images_per_s=round(args.steps * args.bs / median, 1),
                         ratio_to_plain=round(median / plain, 3)))
    emit(rows, **{k: v for k, v in vars(args).items()})

if __name__ == "__main__": main()
