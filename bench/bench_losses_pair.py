"""Forward+backward time of the pair and triplet losses against pytorch-metric-learning's, on the CPU.

Same embeddings and labels for both; prints JSON with the ratio ours / PML (below 1 means faster).
Usage: python bench/bench_losses_pair.py [--quick] [--cpu-time]
"""
import sys, torch
from pytorch_metric_learning import losses as pml
from dml_nb import losses_pair as ours
from common import CPU_TIME, compare, fwd_bwd, emit

settings = {"ContrastiveLoss": {}, "TripletMarginLoss": {}, "MarginLoss": dict(learn_beta=True, nu=0.1),
            "MultiSimilarityLoss": {}, "GeneralizedLiftedStructureLoss": {}, "CircleLoss": {},
            "SignalToNoiseRatioContrastiveLoss": {}}
quick = "--quick" in sys.argv
rows = []
for batch_size in ((256,) if quick else (256, 1024)):
    torch.manual_seed(0)
    embeddings, labels = torch.randn(batch_size, 512), torch.randint(0, 100, (batch_size,))
    for name, kwargs in settings.items():
        theirs, mine = getattr(pml, name)(**kwargs), getattr(ours, name)(**kwargs)
        mine.load_state_dict(theirs.state_dict())
        assert torch.allclose(mine(embeddings, labels), theirs(embeddings, labels), rtol=1e-4, atol=1e-5), name
        rows.append(compare(name, fwd_bwd(mine, embeddings, labels), fwd_bwd(theirs, embeddings, labels),
                            repeats=3 if quick else (30 if CPU_TIME else 10), batch_size=batch_size, embedding_size=512, num_classes=100))
emit(rows, benchmark="pair and triplet losses, forward+backward, CPU")
