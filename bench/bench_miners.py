"""Time of each miner against pytorch-metric-learning's, on the CPU, same inputs for both.

Batch 256 and 1024 (AngularMiner only 256: it gathers three (triplets, 512) tensors, ~19 GB at 1024 in both libraries), embedding 512, 100 classes; prints JSON with the ratio ours / PML (below 1 means faster).
The random miners are timed on the same seed for both (so they make the same draws).
Usage: python bench/bench_miners.py [--quick]
"""
import sys, torch
from pytorch_metric_learning import miners as pml, losses as pml_losses
from dml_nb import miners as ours
from common import compare, emit

quick = "--quick" in sys.argv
settings = [("BatchHardMiner", {}), ("BatchEasyHardMiner", {}), ("TripletMarginMiner", dict(type_of_triplets="semihard")),
            ("MultiSimilarityMiner", {}), ("PairMarginMiner", {}), ("HDCMiner", {}), ("AngularMiner", {}),
            ("DistanceWeightedMiner", {}), ("UniformHistogramMiner", {})]
seeded = {"DistanceWeightedMiner", "UniformHistogramMiner"}

def call(miner, embeddings, labels, seed=None):
    def run():
        if seed is not None: torch.manual_seed(seed)
        miner(embeddings, labels)
    return run

rows = []
for batch_size in ((256,) if quick else (256, 1024)):
    torch.manual_seed(0)
    embeddings, labels = torch.randn(batch_size, 512), torch.randint(0, 100, (batch_size,))
    for name, kw in settings:
        if name == "AngularMiner" and batch_size > 256: continue  # gathers (triplets, 512) tensors: ~19 GB at 1024 for both libraries
        print(batch_size, name, file=sys.stderr, flush=True)
        mine, theirs = getattr(ours, name)(**kw), getattr(pml, name)(**kw)
        seed = 0 if name in seeded else None
        if seed is not None: torch.manual_seed(seed)
        out_ours = mine(embeddings, labels)
        if seed is not None: torch.manual_seed(seed)
        out_pml = theirs(embeddings, labels)
        assert all(torch.equal(a, b) for a, b in zip(out_ours, out_pml)), name
        repeats = 3 if (quick or batch_size > 256) else 10
        rows.append(compare(name, call(mine, embeddings, labels, seed), call(theirs, embeddings, labels, seed),
                            repeats=repeats, warmup=1, batch_size=batch_size, embedding_size=512, num_classes=100,
                            tuples=len(out_ours[0])))
emit(rows, benchmark="miners, one call each, CPU (MaximumLossMiner has no PML 2.x counterpart)")
