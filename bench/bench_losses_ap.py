"""Forward+backward time of the ranking (average-precision) losses against pytorch-metric-learning's, on the CPU.

Same embeddings and labels for both; prints JSON with the ratio ours / PML (below 1 means faster).
FastAPLoss: batches of 256 and 1024, embedding 512, labels drawn from 100 classes.
SmoothAPLoss: PML's version is only correct on k classes of k samples in contiguous blocks and builds several
(n, n, n) tensors, so it runs on 16 x 16 = 256 and 24 x 24 = 576 samples (1024 would need about 20 GB in PML).
Usage: python bench/bench_losses_ap.py [--quick] [--cpu-time]
"""
import sys, torch
from pytorch_metric_learning import losses as pml
from dml_nb import losses_ap as ours
from common import CPU_TIME, compare, fwd_bwd, emit

quick = "--quick" in sys.argv
repeats = 3 if quick else (30 if CPU_TIME else 10)
rows = []

def check_and_time(name, mine, theirs, embeddings, labels, **info):
    "Assert equal values, then time forward+backward of both."
    assert torch.allclose(mine(embeddings, labels), theirs(embeddings, labels), rtol=1e-4, atol=1e-5), name
    rows.append(compare(name, fwd_bwd(mine, embeddings, labels), fwd_bwd(theirs, embeddings, labels), repeats=repeats,
                        batch_size=len(labels), embedding_size=embeddings.shape[1], num_classes=int(labels.unique().numel()), **info))

for batch_size in ((256,) if quick else (256, 1024)):
    torch.manual_seed(0)
    embeddings, labels = torch.randn(batch_size, 512), torch.randint(0, 100, (batch_size,))
    check_and_time("FastAPLoss", ours.FastAPLoss(), pml.FastAPLoss(), embeddings, labels, num_bins=10)

for k in ((16,) if quick else (16, 24)):
    torch.manual_seed(0)
    embeddings, labels = torch.randn(k * k, 512), torch.arange(k).repeat_interleave(k)
    check_and_time("SmoothAPLoss", ours.SmoothAPLoss(), pml.SmoothAPLoss(), embeddings, labels, temperature=0.01)

emit(rows, benchmark="ranking (average-precision) losses, forward+backward, CPU")
