"""Forward+backward time of the proxy and classification losses against pytorch-metric-learning's, on the CPU.

Same embeddings, labels and learned vectors for both; prints JSON with the ratio ours / PML (below 1 means faster).
Usage: python bench/bench_losses_proxy.py [--quick] [--cpu-time]
"""
from dml_nb import losses_proxy
from common import bench_class_losses

bench_class_losses(losses_proxy, ["ProxyNCALoss", "ProxyAnchorLoss", "SoftTripleLoss", "NormalizedSoftmaxLoss"],
                   "proxy and classification losses, forward+backward, CPU")
