"""Forward+backward time of the margin-softmax losses against pytorch-metric-learning's, on the CPU.

Same embeddings, labels and weights for both; prints JSON with the ratio ours / PML (below 1 means faster).
Usage: python bench/bench_losses_margin.py [--quick] [--cpu-time]
"""
from dml_nb import losses_margin_softmax
from common import bench_class_losses

bench_class_losses(losses_margin_softmax, ["LargeMarginSoftmaxLoss", "SphereFaceLoss", "CosFaceLoss", "ArcFaceLoss", "SubCenterArcFaceLoss"],
                   "margin-softmax losses, forward+backward, CPU")
