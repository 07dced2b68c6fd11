"""Forward+backward time of the N-pair family of losses against pytorch-metric-learning's, on the CPU.

Same embeddings, labels and tuples for both; prints JSON with the ratio ours / PML (below 1 means faster).
Batches of 256 and 1024 embeddings of size 512 from 100 classes, all pairs (no miner) and a miner's triplets (BatchHardMiner).
PML's NTXentLoss and TupletMarginLoss build a (positive pairs x negative pairs) matrix: where that matrix would exceed
`--max-pml-elements` (default 4e8, about 1.6 GB per float32 copy) PML is not run and only our time is reported.
Usage: python bench/bench_losses_npair.py [--quick] [--cpu-time]
"""
import sys, torch
from pytorch_metric_learning import losses as pml, miners as pml_miners
from dml_nb import losses_npair as ours
from dml_nb.core import all_pairs_indices, convert_to_pairs
from common import CPU_TIME, compare, fwd_bwd, time_call, emit

names = ["NPairsLoss", "NTXentLoss", "SupConLoss", "NCALoss", "AngularLoss", "TupletMarginLoss"]
pair_matrix_losses = {"NTXentLoss", "TupletMarginLoss"}  # PML's memory grows as (#pos pairs) x (#neg pairs)
quick = "--quick" in sys.argv
max_pml = float(sys.argv[sys.argv.index("--max-pml-elements") + 1]) if "--max-pml-elements" in sys.argv else 4e8
repeats = 3 if quick else (30 if CPU_TIME else 10)
rows = []
for batch_size in ((256,) if quick else (256, 1024)):
    torch.manual_seed(0)
    embeddings, labels = torch.randn(batch_size, 512), torch.randint(0, 100, (batch_size,))
    mined = pml_miners.BatchHardMiner()(embeddings, labels)
    for tuples_name, tuples in (("all pairs", None), ("BatchHardMiner triplets", mined)):
        a1, _, a2, _ = convert_to_pairs(tuples, labels)
        for name in names:
            info = dict(batch_size=batch_size, embedding_size=512, num_classes=100, tuples=tuples_name, pos_pairs=len(a1), neg_pairs=len(a2))
            mine, theirs = getattr(ours, name)(), getattr(pml, name)()
            if name in pair_matrix_losses and len(a1) * len(a2) > max_pml:
                t = time_call(fwd_bwd(mine, embeddings, labels, tuples), repeats=repeats)
                rows.append(dict(name=name, ours_s=round(t, 6), reference_s=None, ratio=None,
                                 note=f"PML skipped: its {len(a1)} x {len(a2)} pair matrix does not fit in memory", **info))
                continue
            x = embeddings.clone()
            v_ours = mine(x, labels, tuples) if tuples is not None else mine(x, labels)
            v_pml = theirs(x, labels, tuples) if tuples is not None else theirs(x, labels)
            assert torch.allclose(v_ours, v_pml, rtol=1e-4, atol=1e-5), (name, v_ours.item(), v_pml.item())
            rows.append(compare(name, fwd_bwd(mine, embeddings, labels, tuples), fwd_bwd(theirs, embeddings, labels, tuples),
                                repeats=min(repeats, 3) if name in pair_matrix_losses else repeats, **info))  # PML takes seconds there
            print(rows[-1], file=sys.stderr)
emit(rows, benchmark="N-pair family losses, forward+backward, CPU")
