"""Omniglot one-shot recipe search: train on the 4 background training alphabets of the bundled minimal archives,
pick the epoch by validation MAP@R on Balinese, score 20-way / 5-way within-alphabet one-shot episodes (400 each,
seed 0) and MAP@R on Early_Aramaic, Greek and Korean.

One invocation trains one setting and appends one row to bench/results/omniglot_oneshot.csv, e.g.

    python bench/omniglot_oneshot.py --step 0 --change "baseline (tutorial)"              # Conv-4, 28 px, MS loss
    python bench/omniglot_oneshot.py --step F --change final --rot_classes --size 56 ...  # see --help

Everything the recipe needs beyond the library (rotation classes, stronger affine/elastic augmentation, a wider
Conv-4, test-time shift averaging) is written out here as small functions, ready to be ported.
"""
from __future__ import annotations
import argparse, csv, os, sys, tempfile, time, warnings
from pathlib import Path
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from PIL import Image

warnings.filterwarnings("ignore", message="IProgress not found")
os.environ.setdefault("HF_HUB_OFFLINE", "1"); os.environ.setdefault("MPLBACKEND", "Agg")

from fastai.vision.augment import aug_transforms
from fastai.data.transforms import Normalize
from fasttransform import Transform
from fastai.torch_core import TensorImage
from fastai.callback.tracker import SaveModelCallback
from dml_nb.core import seed_everything
from dml_nb.data import (omniglot_folder, class_folder_items, split_by_group, with_drawers, OMNIGLOT_SPLIT,
                         DMLDataLoaders, preprocess_images)
from dml_nb.models import create_embedder, ConvNet, Embedder
from dml_nb.losses import MultiSimilarityLoss, ProxyAnchorLoss, ContrastiveLoss, CircleLoss, SupConLoss
from dml_nb.miners import MultiSimilarityMiner
from dml_nb.learner import metric_learner, get_embeddings
from dml_nb.metrics import retrieval_metrics
from dml_nb.samplers import HierarchicalSampler, MPerClassSampler, with_batch_sampler

RESULTS = Path(__file__).resolve().parent / "results" / "omniglot_oneshot.csv"
COLUMNS = ["step", "change", "20-way", "20-way ±", "5-way", "5-way ±", "MAP@R", "seconds"]

# ---------------------------------------------------------------------------------------------------------------
# The evaluation protocol, copied from nbs/21_tutorial_omniglot.ipynb (moving into dml_nb.metrics)
def one_shot_episodes(labels, alphabets, drawers, n_way=20, n_episodes=400, seed=0):
    "Lake et al.'s episodes as (support, query) index arrays: `n_way` characters of one alphabet, drawn by drawer A (support) and drawer B (queries)."
    labels, alphabets, drawers = np.asarray(labels), np.asarray(alphabets), np.asarray(drawers)
    if not len(labels) == len(alphabets) == len(drawers): raise ValueError("labels, alphabets and drawers must have the same length")
    index = {}
    for i, key in enumerate(zip(labels.tolist(), drawers.tolist())):
        if key in index: raise ValueError(f"character {key[0]!r} has two drawings by drawer {key[1]!r}")
        index[key] = i
    drawers_of = {}
    for character, drawer in index: drawers_of.setdefault(character, set()).add(drawer)
    chars_of = {a: sorted(set(labels[alphabets == a].tolist())) for a in sorted(set(alphabets.tolist()))}
    eligible = [a for a, chars in chars_of.items() if len(chars) >= n_way]
    if not eligible: raise ValueError(f"no alphabet has {n_way} characters: the largest has {max(map(len, chars_of.values()))}")
    rng, episodes = np.random.default_rng(seed), []
    for _ in range(n_episodes):
        alphabet = eligible[rng.integers(len(eligible))]
        chars = [chars_of[alphabet][i] for i in rng.choice(len(chars_of[alphabet]), n_way, replace=False)]
        common = sorted(set.intersection(*(drawers_of[c] for c in chars)))
        if len(common) < 2: raise ValueError(f"fewer than two drawers drew the same {n_way} characters of {alphabet!r}")
        support_drawer, query_drawer = rng.choice(common, 2, replace=False)
        episodes.append((np.array([index[c, support_drawer] for c in chars]), np.array([index[c, query_drawer] for c in chars])))
    return episodes

def one_shot_accuracy(embeddings, episodes):
    "Accuracy of each episode: the fraction of queries whose nearest support (Euclidean distance) is their own character."
    embeddings = torch.as_tensor(embeddings).float()
    accuracies = []
    for support, query in episodes:
        nearest = torch.cdist(embeddings[query], embeddings[support]).argmin(1)
        accuracies.append((nearest == torch.arange(len(query))).float().mean().item())
    return np.array(accuracies)

def mean_ci(values):
    "Mean of `values` and the half-width of its 95% confidence interval (1.96 standard errors)."
    return float(np.mean(values)), float(1.96 * np.std(values, ddof=1) / np.sqrt(len(values)))

# ---------------------------------------------------------------------------------------------------------------
# Feature 1: rotation classes (each training character rotated by 90/180/270 degrees is a new class)
ROTATED_DIR = Path(__file__).resolve().parent / "oneshot_scratch" / "rotated"

def rotated_copy(path:str, degrees:int, root:Path=ROTATED_DIR) -> str:
    "The path of a copy of the drawing at `path` rotated by `degrees` (counter-clockwise), written once under `root`."
    src = Path(path)
    dest = root / f"rot{degrees}" / src.parent.parent.name / src.parent.name / src.name
    if not dest.exists():
        dest.parent.mkdir(parents=True, exist_ok=True)
        with Image.open(src) as im: im.rotate(degrees, expand=True).save(dest)  # multiples of 90: lossless
    return str(dest)

def with_rotation_classes(items:pd.DataFrame, rotations=(90, 180, 270)) -> pd.DataFrame:
    """`items` plus, for every train row, one row per rotation whose character is a new class (`label@rot90`):
    4x the training classes (Santoro et al. 2016, Vinyals et al. 2016); valid and test rows unchanged (rotation 0)."""
    items = items.assign(rotation=0)
    train = items[items.split == "train"]
    extra = [train.assign(rotation=r, label=train.label + f"@rot{r}", path=[rotated_copy(q, r) for q in train.path]) for r in rotations]
    return pd.concat([items, *extra], ignore_index=True)

# ---------------------------------------------------------------------------------------------------------------
# Feature 3: augmentation (batch transforms; Normalize last, as the preset's)
class ElasticWarp(Transform):
    "Smooth random displacement of the strokes (elastic distortion), on training batches only: a coarse random field, upsampled."
    split_idx, order = 0, 30  # after fastai's affine transforms (order 30 too; they run first by insertion order)
    def __init__(self, magnitude:float=0.03, grid:int=4, p:float=0.5): self.magnitude, self.grid, self.p = magnitude, grid, p
    def encodes(self, x:TensorImage):
        n, _, h, w = x.shape
        field = torch.randn(n, 2, self.grid, self.grid, device=x.device) * self.magnitude
        field = field * (torch.rand(n, 1, 1, 1, device=x.device) < self.p)
        field = F.interpolate(field, size=(h, w), mode="bicubic", align_corners=True).permute(0, 2, 3, 1)
        theta = torch.eye(2, 3, device=x.device).expand(n, 2, 3)
        base = F.affine_grid(theta, (n, 1, h, w), align_corners=False)
        return TensorImage(F.grid_sample(x, base + field, mode="bilinear", padding_mode="border", align_corners=False))

def batch_tfms(aug:str, max_rotate=15., max_zoom=1.2, min_zoom=0.8, max_warp=0.2, elastic=0.) -> list|None:
    "None: the preset's (rotate 10, zoom 1.1); 'strong': fastai affine with the given ranges (+ elastic if > 0)."
    if aug == "preset": return None
    norm = Normalize.from_stats((0.5,), (0.5,), cuda=False)
    if aug == "none": return [norm]
    tfms = aug_transforms(do_flip=False, max_rotate=max_rotate, max_zoom=max_zoom, min_zoom=min_zoom, max_warp=max_warp,
                          max_lighting=0., p_lighting=0., p_affine=1.0, pad_mode="border")
    if elastic: tfms.append(ElasticWarp(elastic))
    return tfms + [norm]

# ---------------------------------------------------------------------------------------------------------------
# Feature 4: a wider / deeper Conv-N
def make_model(arch:str, width:int, blocks:int, embed_dim:int, pool:str="avg"):
    if arch == "convnet":  # the built-in ConvNet with a chosen width and depth
        return Embedder(ConvNet(n_in=1, n_blocks=blocks, width=width), width, embed_dim=embed_dim, pool=pool, n_in=1)
    return create_embedder(arch, n_in=1, embed_dim=embed_dim, pool=pool)

# ---------------------------------------------------------------------------------------------------------------
# Feature 6: test-time augmentation (mean embedding over small shifts)
def shifts(images:torch.Tensor, pixels=(), diagonal:bool=False) -> list:
    """The images and copies shifted by each of `pixels` in the 4 (8 with `diagonal`) directions, padded with the
    background (white: the maximum). pixels=(1, 2), diagonal=True gives 17 views (chosen on the validation alphabet)."""
    out, h, w = [images], images.shape[-2], images.shape[-1]
    for s in pixels:
        pad = F.pad(images, (s,) * 4, value=float(images.max()))
        moves = [(-s, 0), (s, 0), (0, -s), (0, s)] + ([(-s, -s), (-s, s), (s, -s), (s, s)] if diagonal else [])
        for dy, dx in moves: out.append(pad[..., s + dy:s + dy + h, s + dx:s + dx + w])
    return out

def embed(model, images, pixels=(), diagonal=False):
    "Mean of the L2-normalised embeddings of the shifted views, normalised again (test-time augmentation)."
    embs = [get_embeddings(model, torch.split(x.contiguous(), 256), progress=False)[0] for x in shifts(images, pixels, diagonal)]
    return F.normalize(torch.stack(embs).mean(0), dim=1)

# ---------------------------------------------------------------------------------------------------------------
def make_loss(name, n_classes, embed_dim):
    if name == "ms": return MultiSimilarityLoss(), MultiSimilarityMiner(epsilon=0.1), 1.
    if name == "ms_nominer": return MultiSimilarityLoss(), None, 1.
    if name == "proxy_anchor": return ProxyAnchorLoss(n_classes, embed_dim, margin=0.1, alpha=32), None, 100.
    if name == "contrastive": return ContrastiveLoss(), None, 1.
    if name == "circle": return CircleLoss(), None, 1.
    if name == "supcon": return SupConLoss(), None, 1.
    raise ValueError(name)

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--step", default="?"); p.add_argument("--change", default="")
    p.add_argument("--rot_classes", action="store_true", help="rotations 90/180/270 of training characters as new classes")
    p.add_argument("--size", type=int, default=28)
    p.add_argument("--aug", default="preset", choices=["preset", "none", "strong"])
    p.add_argument("--max_rotate", type=float, default=15.); p.add_argument("--max_zoom", type=float, default=1.2)
    p.add_argument("--min_zoom", type=float, default=0.8); p.add_argument("--max_warp", type=float, default=0.2)
    p.add_argument("--elastic", type=float, default=0.)
    p.add_argument("--arch", default="convnet"); p.add_argument("--width", type=int, default=64)
    p.add_argument("--blocks", type=int, default=4); p.add_argument("--embed_dim", type=int, default=128)
    p.add_argument("--pool", default="avg")
    p.add_argument("--loss", default="ms"); p.add_argument("--sampler", default="mpc", choices=["mpc", "hier"])
    p.add_argument("--bs", type=int, default=64); p.add_argument("--m", type=int, default=4)
    p.add_argument("--epochs", type=int, default=10); p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--wd", type=float, default=None)
    p.add_argument("--tta", default="", help="comma-separated shifts in pixels to average embeddings over, e.g. 1,2 (also scored without)")
    p.add_argument("--tta_diag", action="store_true", help="shift diagonally too (8 directions instead of 4)")
    p.add_argument("--load", default=None, help="evaluate saved weights instead of training")
    p.add_argument("--seed", type=int, default=0); p.add_argument("--threads", type=int, default=1)
    p.add_argument("--no_csv", action="store_true"); p.add_argument("--save", default=None)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)

    items = with_drawers(split_by_group(class_folder_items(omniglot_folder(), verify=False), **OMNIGLOT_SPLIT))
    items = with_rotation_classes(items) if a.rot_classes else items
    dls = DMLDataLoaders.from_items(items[items.split != "test"], preset="gray", size=a.size, bs=a.bs, m_per_class=a.m, seed=a.seed,
                                    batch_tfms=batch_tfms(a.aug, a.max_rotate, a.max_zoom, a.min_zoom, a.max_warp, a.elastic))
    if a.sampler == "hier":  # batches of one alphabet (and one rotation) at a time
        train = dls.items[dls.items.split == "train"]
        class_ids = {o: i for i, o in enumerate(dls.vocab)}
        parents = pd.factorize(train.parent + "@" + train.rotation.astype(str) if "rotation" in train else train.parent)[0]
        dls.loaders[0] = with_batch_sampler(dls.train, HierarchicalSampler([class_ids[o] for o in train.label], parents, a.m, a.bs, seed=a.seed))
    test_items = items[items.split == "test"].reset_index(drop=True)
    test_images = preprocess_images(test_items.path, dls.dml_config)
    test_labels = torch.as_tensor(pd.factorize(test_items.label)[0])
    episodes = {n: one_shot_episodes(test_labels.numpy(), test_items.parent.to_numpy(), test_items.drawer.to_numpy(), n_way=n,
                                     n_episodes=400, seed=0) for n in (5, 20)}

    seed_everything(a.seed)
    model = make_model(a.arch, a.width, a.blocks, a.embed_dim, a.pool)
    loss, miner, lr_mult = make_loss(a.loss, dls.n_train_classes, a.embed_dim)
    work = Path(tempfile.mkdtemp(prefix="omniglot_oneshot_"))
    kw = {} if a.wd is None else dict(wd=a.wd)
    learn = metric_learner(dls, model, loss, miner=miner, loss_lr_mult=lr_mult, path=work, **kw)
    print(f"[{a.step}] {a.change}: {dls.n_train_classes} train classes, {len(dls.train_ds)} images, {len(dls.train)} batches/epoch; "
          f"{sum(q.numel() for q in model.parameters())/1e6:.2f}M params", flush=True)
    t0, c0 = time.time(), time.process_time()
    if a.load: model.load_state_dict(torch.load(a.load)); hist = pd.DataFrame({"mean_average_precision_at_r": [float("nan")]})
    else:
        with learn.no_bar():
            learn.fit_one_cycle(a.epochs, a.lr, cbs=SaveModelCallback(monitor="mean_average_precision_at_r", comp=np.greater, fname="best", with_opt=False))
        hist = pd.DataFrame(learn.recorder.values, columns=learn.recorder.metric_names[1:-1])
        print(hist.round(4).to_string(), flush=True)
    seconds, cpu = time.time() - t0, time.process_time() - c0
    best_epoch = int(hist["mean_average_precision_at_r"].fillna(0).idxmax())
    if a.save: torch.save(model.state_dict(), a.save)

    rows = []
    pixels = tuple(int(o) for o in a.tta.split(",") if o.strip())
    for tta in ([(), pixels] if pixels else [()]):
        e = embed(model, test_images, tta, a.tta_diag)
        row = {"step": a.step if tta == pixels else f"{a.step}-noTTA",
               "change": a.change if tta == pixels else f"{a.change} (without TTA)"}
        for n in (20, 5): row[f"{n}-way"], row[f"{n}-way ±"] = mean_ci(one_shot_accuracy(e, episodes[n]))
        row["MAP@R"] = retrieval_metrics(e, test_labels, include=["mean_average_precision_at_r"])["mean_average_precision_at_r"]
        row["seconds"] = round(seconds)
        rows.append(row)
        print(f"RESULT tta={tta} best_epoch={best_epoch} valid_MAP@R={hist['mean_average_precision_at_r'].max():.4f} "
              f"20-way {row['20-way']:.4f} ± {row['20-way ±']:.4f}  5-way {row['5-way']:.4f} ± {row['5-way ±']:.4f}  "
              f"MAP@R {row['MAP@R']:.4f}  fit {seconds:.0f} s wall, {cpu:.0f} s CPU", flush=True)
    if not a.no_csv:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        new = not RESULTS.exists()
        with open(RESULTS, "a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=COLUMNS)
            if new: w.writeheader()
            for row in rows: w.writerow({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()})
    return rows

if __name__ == "__main__": main()
