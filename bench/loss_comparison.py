"""A fair comparison of metric-learning losses on Omniglot: one backbone, schedule, batch sampler, optimiser and seed
for every loss; class-disjoint (by whole alphabets) train/test split; retrieval and clustering metrics on the test
alphabets, averaged over seeds. Importable (`compare_losses`, `summary_table`) and a script:

    python bench/loss_comparison.py                                  # the setting of nbs/23 (12 losses, 3 seeds)
    python bench/loss_comparison.py --epochs 20 --seeds 0 1 2 3 4 --embed_dim 128 --out_csv bench/results/long.csv
    python bench/loss_comparison.py --losses ProxyAnchorLoss ArcFaceLoss --arch resnet18 --size 64

The script prints the summary table (mean ± std over seeds) as markdown and, with --out_csv, writes the raw per-seed
results as CSV.
"""
from __future__ import annotations
import argparse, os, sys, time
from pathlib import Path
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from fastai.callback.core import Callback, CancelValidException
from dml_nb.core import seed_everything
from dml_nb.datasets import omniglot_folder
from dml_nb.data import class_folder_items, DMLDataLoaders, preprocess_images
from dml_nb.models import create_embedder
from dml_nb.learner import metric_learner, get_embeddings
from dml_nb.metrics import retrieval_metrics
from dml_nb.losses_pair import ContrastiveLoss, TripletMarginLoss, MultiSimilarityLoss
from dml_nb.losses_proxy import ProxyNCALoss, ProxyAnchorLoss, SoftTripleLoss, NormalizedSoftmaxLoss
from dml_nb.losses_margin_softmax import ArcFaceLoss, CosFaceLoss, SubCenterArcFaceLoss, CurricularFaceLoss, AdaFaceLoss
from dml_nb.miners import TripletMarginMiner, MultiSimilarityMiner

__all__ = ["LOSS_SETUPS", "DEFAULT_LOSSES", "TEST_ALPHABETS", "METRICS", "omniglot_items", "make_loss", "evaluate_embedder",
           "train_and_evaluate", "compare_losses", "summary_table", "markdown_table", "main"]

# Each setup: the loss class, its hyperparameters (the libraries' defaults unless noted), the miner (a factory, or None)
# and the learning-rate multiplier of the loss's own parameters (proxies, class weights).
LOSS_SETUPS = {
    # Pair and triplet losses: PML's defaults; the triplet loss gets PML's TripletMarginMiner ("all" triplets within
    # margin 0.2), the multi-similarity loss its own miner (Wang et al. 2019, eq. 3-4, epsilon=0.1).
    "TripletMarginLoss": dict(cls=TripletMarginLoss, kwargs={}, miner=TripletMarginMiner, lr_mult=1.0,
                              label="TripletMarginLoss + TripletMarginMiner"),
    "ContrastiveLoss": dict(cls=ContrastiveLoss, kwargs={}, miner=None, lr_mult=1.0, label="ContrastiveLoss"),
    "MultiSimilarityLoss": dict(cls=MultiSimilarityLoss, kwargs={}, miner=MultiSimilarityMiner, lr_mult=1.0,
                                label="MultiSimilarityLoss + MultiSimilarityMiner"),
    # Proxy losses: 100x learning rate for the proxies, Proxy-Anchor's setting (Kim et al. 2020, sec. 4.2) and SoftTriple's
    # (Qian et al. 2019: centres at 1e-2, backbone at 1e-4). PML's ProxyNCA default softmax_scale=1 is unsuitable: with
    # normalised embeddings and proxies the logits then span only [-2, 2] and the softmax stays nearly uniform;
    # we use 1/0.11 ~ 9, the temperature of ProxyNCA++ (Teh et al. 2020).
    "ProxyNCALoss": dict(cls=ProxyNCALoss, kwargs=dict(softmax_scale=9.0), miner=None, lr_mult=100.0, label="ProxyNCALoss (scale 9)"),
    "ProxyAnchorLoss": dict(cls=ProxyAnchorLoss, kwargs={}, miner=None, lr_mult=100.0, label="ProxyAnchorLoss"),
    "SoftTripleLoss": dict(cls=SoftTripleLoss, kwargs={}, miner=None, lr_mult=100.0, label="SoftTripleLoss"),
    # Classification (normalised softmax and additive-margin) losses: their class weights, like proxies, only get a
    # gradient when their class is in the batch (16 of the training characters per batch), so they train 10x faster than
    # the backbone; the papers train them with the backbone's rate on 10^4-10^5 classes and long schedules, which this
    # short schedule does not have. 10 was chosen once, not tuned per loss.
    "NormalizedSoftmaxLoss": dict(cls=NormalizedSoftmaxLoss, kwargs={}, miner=None, lr_mult=10.0, label="NormalizedSoftmaxLoss"),
    "ArcFaceLoss": dict(cls=ArcFaceLoss, kwargs={}, miner=None, lr_mult=10.0, label="ArcFaceLoss"),
    "CosFaceLoss": dict(cls=CosFaceLoss, kwargs={}, miner=None, lr_mult=10.0, label="CosFaceLoss"),
    "SubCenterArcFaceLoss": dict(cls=SubCenterArcFaceLoss, kwargs={}, miner=None, lr_mult=10.0, label="SubCenterArcFaceLoss"),
    "CurricularFaceLoss": dict(cls=CurricularFaceLoss, kwargs={}, miner=None, lr_mult=10.0, label="CurricularFaceLoss"),
    "AdaFaceLoss": dict(cls=AdaFaceLoss, kwargs={}, miner=None, lr_mult=10.0, label="AdaFaceLoss"),
}
DEFAULT_LOSSES = ["untrained", *LOSS_SETUPS]
TEST_ALPHABETS = ["Early_Aramaic", "Greek", "Korean"]  # held out whole: 86 characters, as in nbs/21
METRICS = {"mean_average_precision_at_r": "MAP@R", "precision_at_1": "P@1", "r_precision": "R-precision",
           "recall_at_1": "Recall@1", "recall_at_2": "Recall@2", "recall_at_4": "Recall@4", "recall_at_8": "Recall@8",
           "NMI": "NMI", "train_time_s": "training time (s)"}

def _default_data_root() -> Path:
    "The shared Omniglot archives, found from the notebooks' folder, the project root, or the absolute path."
    return next((p for p in [Path("../../shared/data/omniglot"), Path("../shared/data/omniglot"), Path("/work/shared/data/omniglot")]
                 if p.exists()), Path("/work/shared/data/omniglot"))

def omniglot_items(data_root:str|Path|None=None, # Omniglot zips (or a folder of them); None means the shared copy
                   test_alphabets:list=TEST_ALPHABETS, # alphabets held out for testing, whole
                   max_classes:int|None=None, # keep only the first `max_classes` characters of each split (tiny smoke runs)
                   max_train_classes:int|None=None, # keep a random (seed 0) subset of this many training characters, from all training alphabets
                  ) -> pd.DataFrame:
    "Omniglot items (path, label, parent alphabet) with a `split` column: 'test' for `test_alphabets`, 'train' for the rest."
    items = class_folder_items(omniglot_folder(data_root if data_root is not None else _default_data_root()), verify=False)
    unknown = set(test_alphabets) - set(items.parent)
    if unknown: raise ValueError(f"unknown test alphabet(s) {sorted(unknown)}: the data has {sorted(items.parent.unique())}")
    items["split"] = np.where(items.parent.isin(test_alphabets), "test", "train")
    if max_classes is not None:
        keep = [c for s in ("train", "test") for c in sorted(items.label[items.split == s].unique())[:max_classes]]
        items = items[items.label.isin(keep)].reset_index(drop=True)
    if max_train_classes is not None:
        train_chars = sorted(items.label[items.split == "train"].unique())
        if max_train_classes > len(train_chars): raise ValueError(f"max_train_classes={max_train_classes} but there are only {len(train_chars)} training characters")
        keep = set(np.random.default_rng(0).choice(train_chars, max_train_classes, replace=False).tolist())
        items = items[(items.split == "test") | items.label.isin(keep)].reset_index(drop=True)
    return items

def make_loss(name:str, # a key of `LOSS_SETUPS`
              num_classes:int, # training classes (for proxy and classification losses)
              embed_dim:int, # embedding size
             ) -> tuple:
    "`(loss, miner, loss_lr_mult)` for `name`, built as `LOSS_SETUPS` says."
    if name not in LOSS_SETUPS: raise ValueError(f"unknown loss {name!r}: choose from 'untrained', {', '.join(LOSS_SETUPS)}")
    setup = LOSS_SETUPS[name]
    per_class = name not in ("TripletMarginLoss", "ContrastiveLoss", "MultiSimilarityLoss")
    loss = setup["cls"](num_classes, embed_dim, **setup["kwargs"]) if per_class else setup["cls"](**setup["kwargs"])
    return loss, (setup["miner"]() if setup["miner"] is not None else None), setup["lr_mult"]

class SkipValidation(Callback):
    "Skip fastai's per-epoch validation: the comparison evaluates once, after training, on the test alphabets."
    order = -100
    def before_validate(self): raise CancelValidException()

def evaluate_embedder(model:torch.nn.Module, # images -> embeddings
                      images:torch.Tensor, # (n, n_in, size, size) preprocessed test images
                      labels:torch.Tensor, # (n,) their classes
                     ) -> dict:
    "Retrieval (leave-one-out) and clustering metrics of `model` on the test images, on L2-normalised embeddings."
    embeddings = get_embeddings(model, torch.split(images, 256), progress=False)[0]
    if not torch.isfinite(embeddings).all(): raise ValueError("the model produced non-finite embeddings (training diverged)")
    values = retrieval_metrics(F.normalize(embeddings, dim=1), labels)
    return {k: values[k] for k in METRICS if k in values}

def train_and_evaluate(name:str, # "untrained" or a key of `LOSS_SETUPS`
                       dls, # `DMLDataLoaders`: training alphabets in `train` (its `valid` is not used)
                       test_images:torch.Tensor, # preprocessed test images (`preprocess_images`)
                       test_labels:torch.Tensor, # their classes
                       seed:int, # seed of the initial weights (the data order is seeded by `dls`)
                       epochs:int, # epochs of `fit_one_cycle`
                       lr:float=3e-3, # peak learning rate
                       arch:str="convnet4", # backbone
                       embed_dim:int=64, # embedding size
                      ) -> dict:
    "Train a fresh embedder with loss `name` and return its test metrics and training time."
    seed_everything(seed)
    model = create_embedder(arch, embed_dim=embed_dim, n_in=dls.dml_config["n_in"], normalize=False)
    if name == "untrained": return {**evaluate_embedder(model, test_images, test_labels), "train_time_s": 0.0}
    loss, miner, lr_mult = make_loss(name, dls.n_train_classes, embed_dim)
    learn = metric_learner(dls, model, loss, miner=miner, loss_lr_mult=lr_mult, metrics=[], collapse_warning=False,
                           cbs=SkipValidation())
    start = time.perf_counter()
    with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(epochs, lr)
    train_time = time.perf_counter() - start
    return {**evaluate_embedder(learn.model, test_images, test_labels), "train_time_s": train_time}

def compare_losses(losses:list[str]=DEFAULT_LOSSES, # "untrained" and/or keys of `LOSS_SETUPS`
                   seeds:tuple=(0, 1, 2), # one run per seed: initial weights and batch order
                   epochs:int=4, # epochs of `fit_one_cycle`, the same for every loss
                   size:int=28, # image side in pixels
                   arch:str="convnet4", # backbone, the same for every loss
                   embed_dim:int=64, # embedding size
                   data:str="omniglot", # the data set (only Omniglot is wired in)
                   data_root:str|Path|None=None, # Omniglot zips or a folder of them; None means the shared copy
                   out_csv:str|Path|None=None, # write the raw per-seed results here (rewritten after every run)
                   lr:float=3e-3, # peak learning rate of the one-cycle schedule
                   bs:int=64, # batch size
                   m_per_class:int=4, # images per class in a batch
                   max_classes:int|None=None, # keep only this many characters per split (tiny smoke runs)
                   max_train_classes:int|None=None, # train on a fixed random subset of this many characters (None: all 156)
                   verbose:bool=False, # print one line per run
                  ) -> pd.DataFrame:
    "Train and evaluate every loss with every seed under identical conditions: one row per (loss, seed)."
    if data != "omniglot": raise ValueError(f"data={data!r} is not supported: only 'omniglot' is wired in")
    unknown = [o for o in losses if o != "untrained" and o not in LOSS_SETUPS]
    if unknown: raise ValueError(f"unknown loss(es) {unknown}: choose from 'untrained', {', '.join(LOSS_SETUPS)}")
    if not losses or not len(seeds): raise ValueError("give at least one loss and one seed")
    if epochs < 1: raise ValueError(f"epochs must be at least 1, got {epochs}")
    items = omniglot_items(data_root, max_classes=max_classes, max_train_classes=max_train_classes)
    test_items = items[items.split == "test"].reset_index(drop=True)
    rows, test_images, test_labels = [], None, torch.as_tensor(pd.factorize(test_items.label)[0])
    for seed in seeds:
        dls = DMLDataLoaders.from_items(items, preset="gray", size=size, bs=bs, m_per_class=m_per_class, seed=seed)
        if test_images is None: test_images = preprocess_images(test_items.path, dls.dml_config)  # as the validation DataLoader would
        for name in losses:
            row = dict(loss=name, seed=seed, epochs=0 if name == "untrained" else epochs, arch=arch, embed_dim=embed_dim, size=size,
                       n_train_classes=dls.n_train_classes, n_test_classes=len(test_labels.unique()),
                       **train_and_evaluate(name, dls, test_images, test_labels, seed, epochs, lr=lr, arch=arch, embed_dim=embed_dim))
            rows.append(row)
            if verbose: print(f"{name:>22} seed {seed}: MAP@R {row['mean_average_precision_at_r']:.4f}, {row['train_time_s']:.1f} s", flush=True)
            if out_csv is not None: _write_csv(pd.DataFrame(rows), out_csv)
    return pd.DataFrame(rows)

def _write_csv(df, path):
    "Write `df` atomically (a partial file never replaces a complete one)."
    path = Path(path); path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    df.to_csv(tmp, index=False, float_format="%.6g"); os.replace(tmp, path)

def summary_table(raw:pd.DataFrame, # per-seed results from `compare_losses`
                  as_text:bool=True, # "mean ± std" strings; False gives a numeric table with `mean` and `std` column levels
                  digits:int=3, # decimals of the text table (training time: 0)
                 ) -> pd.DataFrame:
    "One row per loss (in the order of `raw`), one column per metric: the mean over seeds and its standard deviation."
    missing = {"loss", "seed", *METRICS} - set(raw.columns)
    if missing: raise ValueError(f"raw results lack column(s) {sorted(missing)}")
    order = list(dict.fromkeys(raw["loss"]))
    grouped = raw.groupby("loss", sort=False)[list(METRICS)]
    mean, std = grouped.mean().loc[order], grouped.std(ddof=1).loc[order].fillna(0.0)  # one seed: no spread
    labels = ["untrained" if o == "untrained" else LOSS_SETUPS[o]["label"] for o in order]
    mean.index = std.index = pd.Index(labels, name="loss")
    mean, std = mean.rename(columns=METRICS), std.rename(columns=METRICS)
    if not as_text: return pd.concat({"mean": mean, "std": std}, axis=1)
    text = pd.DataFrame(index=mean.index)
    for col in mean.columns:
        d = 0 if col == METRICS["train_time_s"] else digits
        text[col] = [f"{m:.{d}f} ± {s:.{d}f}" for m, s in zip(mean[col], std[col])]
    text["seeds"] = raw.groupby("loss", sort=False)["seed"].nunique().loc[order].to_numpy()
    return text

def markdown_table(table:pd.DataFrame) -> str:
    "A markdown table without the optional `tabulate` dependency."
    header = [table.index.name or "", *map(str, table.columns)]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join([str(i), *map(str, row)]) + " |" for i, row in zip(table.index, table.itertuples(index=False))]
    return "\n".join(lines)

def main(argv=None):
    "Command line: run the comparison and print the summary table as markdown."
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--losses", nargs="+", default=DEFAULT_LOSSES, help="'untrained' and/or loss names")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--size", type=int, default=28)
    parser.add_argument("--arch", default="convnet4", help="'convnet4', 'convnet2' or a timm name (random init)")
    parser.add_argument("--embed_dim", type=int, default=64)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--bs", type=int, default=64)
    parser.add_argument("--m_per_class", type=int, default=4)
    parser.add_argument("--max_train_classes", type=int, default=None, help="train on this many characters (default: all 156)")
    parser.add_argument("--data_root", default=None, help="Omniglot zips or a folder of them (default: the shared copy)")
    parser.add_argument("--out_csv", default=None, help="write the per-seed results here")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args(argv)
    if args.threads: torch.set_num_threads(args.threads)
    raw = compare_losses(args.losses, seeds=tuple(args.seeds), epochs=args.epochs, size=args.size, arch=args.arch,
                         embed_dim=args.embed_dim, data_root=args.data_root, out_csv=args.out_csv, lr=args.lr, bs=args.bs,
                         m_per_class=args.m_per_class, max_train_classes=args.max_train_classes, verbose=True)
    print(markdown_table(summary_table(raw)))

if __name__ == "__main__": main()
