"""Forward+backward time of the proxy and classification losses against pytorch-metric-learning's, on the CPU.

Same embeddings, labels and learned vectors for both; prints JSON with the ratio ours / PML (below 1 means faster).
Usage: python bench/bench_losses_proxy.py [--quick]
"""
import sys, torch
from pytorch_metric_learning import losses as pml
from dml_nb import losses_proxy as ours
from common import compare, fwd_bwd, emit

names = ["ProxyNCALoss", "ProxyAnchorLoss", "SoftTripleLoss", "NormalizedSoftmaxLoss"]
quick = "--quick" in sys.argv
rows = []
for batch_size in ((256,) if quick else (256, 1024)):
    torch.manual_seed(0)
    embeddings, labels = torch.randn(batch_size, 512), torch.randint(0, 100, (batch_size,))
    for name in names:
        theirs = getattr(pml, name)(num_classes=100, embedding_size=512)
        mine = getattr(ours, name)(num_classes=100, embedding_size=512)
        mine.load_state_dict(theirs.state_dict())
        assert torch.allclose(mine(embeddings, labels), theirs(embeddings, labels), rtol=1e-4, atol=1e-4), name
        rows.append(compare(name, fwd_bwd(mine, embeddings, labels), fwd_bwd(theirs, embeddings, labels),
                            repeats=3 if quick else 10, batch_size=batch_size, embedding_size=512, num_classes=100))
emit(rows, benchmark="proxy and classification losses, forward+backward, CPU")
