"""Speed benchmark of the 3-pixel differential-evolution attack (spec image-attacks §4, §5, §15, §16).

One MobileNetV3-small is trained here on `synthetic_lesions`; the test melanomas it classifies correctly are then
attacked three ways in the same run, on the same model and the same images (interleaved image by image, so a change in
machine load hits every method alike):

* seed: upstream's way — scipy `differential_evolution` (best1bin, popsize 20 → 300 candidates for 15 parameters,
  mutation (0.5, 1), recombination 0.7, latin hypercube, tol 1e-5, polish, deferred updating, workers=1), one
  candidate per forward pass, int-truncation decode, a callback that re-scores the best member every generation and
  stops on a flip with P > 0.9 or after the 21st generation. That is `de_attack(parity=True, vectorized=False)`.
* ART: IBM ART 1.20.1 `PixelAttack(th=3, es=1)` with a `PyTorchClassifier` around the same network; a wrapper module
  divides by 255 and applies the ImageNet normalisation, so the network sees exactly what vulnbench feeds it, and
  returns logits (what ART recommends). ART's own DE: 26 × 15 = 390 candidates, recombination 1, no early
  convergence, no polish, stops on any flip (one extra forward per generation); `max_iter` is chosen so that its
  evaluation budget matches the others'.
* vulnbench: `de_attack(vectorized=True, parity=False)` — the whole population rendered and scored in one batched
  call, integer search, no polish, the stop rule read from the best energy — with the seed's population (popsize 20)
  and generation cap (20), once with the probability objective (the seed's) and once with the logit margin.
  A diagnostic row adds the margin objective with ART's stop rule (stop at the first flip, `stop_confidence=0.5`).
* ART as shipped: the same `PixelAttack(th=3)` with its default `max_iter` (100 generations, ≈ 39k forwards), what a
  user who installs ART gets; compared separately, since it buys success with a six times larger budget.

Targets (full sizes only): vulnbench ≥ 10× faster per image than the seed's way and ≥ 3× faster than ART, with a
success rate (argmax flipped) no lower than either. The seed's way runs on a subset of the images (it scores one
candidate per forward pass); its ratio compares time per image on the images it ran. It is timed through a thin model
adapter that calls the plain eager network in inference mode (as upstream did), without vulnbench's input checks.
vulnbench scores through `TorchImageModel.logits`, i.e. its inference copy of the network (BatchNorm folded into the
convolutions, channels-last); ART and the seed's way get the plain network a user would hand them. Both raw
throughputs are printed, so the share of the ratio that comes from the faster forward pass is visible, with the same
network's throughput in onnxruntime and the resulting ceiling of any attack's ratio to ART at equal budgets.

One torch thread by default: on this 2-core machine two threads thrash (4–10× slower) whenever anything else runs.
The process keeps freed memory for reuse (`keep_freed_memory`, as the image_attack rule does) before anything is
timed, so every method runs under the same allocator.

Run: `.venv/bin/python benchmarks/img_attacks.py [--quick] [--threads N]` (`--quick`: well under a minute).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import os
import statistics
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
import torch
from torch import nn

from vulnbench.core.jobs import keep_freed_memory, use_threads
from vulnbench.img.attacks.base import image_seed, softmax32
from vulnbench.img.attacks.de import de_attack
from vulnbench.img.attacks.pixel import pixel_search
from vulnbench.img.base import MELANOMA, ImageModel, normalize, to_unit_tensor
from vulnbench.img.data import grouped_split
from vulnbench.img.models import TorchImageModel, train_image_model
from vulnbench.img.synthetic import MELANOMA_LABEL, synthetic_lesions

TARGET_VS_SEED, TARGET_VS_ART = 10.0, 3.0
N_PIXELS = 3
N_PARAMS = 5 * N_PIXELS  # (row, col, R, G, B) per pixel
#: ART PixelAttack's population multiplier: max(1, 400 // number of parameters) (spec §15)
ART_POPSIZE = max(1, 400 // N_PARAMS)
#: images per `model.logits` call when measuring the model's raw throughput (the limit an attack can reach)
THROUGHPUT_BATCH = 256
NAME_WIDTH = 38
SEED = 0
#: diagnostic row: vulnbench with ART's stop rule (any flip)
STOP_AT_FLIP = "vulnbench (margin, flip)"
ART_SHIPPED = "ART (as shipped)"


@dataclass(frozen=True)
class Config:
    """Problem sizes of one run."""

    n_images: int = 400
    image_size: int = 64
    epochs: int = 20
    lr: float = 0.03
    train_batch: int = 16
    n_attacked: int = 8
    n_seed: int = 4  # images the seed's way is run on (the first of the attacked ones)
    popsize: int = 20  # scipy's multiplier, as upstream: population = 20 × 15 = 300
    max_generations: int = 20
    vulnbench_batch: int = 512  # images per batched forward in vulnbench (≥ the population: one call per generation)
    name: str = "full"  # the targets only apply to the full sizes

    @property
    def population(self) -> int:
        return self.popsize * N_PARAMS

    @property
    def de_budget(self) -> int:
        """Most objective evaluations of the seed's and vulnbench's DE: initial population + one per generation."""
        return self.population * (self.max_generations + 1)

    @property
    def art_max_iter(self) -> int:
        """ART generations giving about the same evaluation budget (its population is fixed at 390)."""
        return max(1, round(self.de_budget / (ART_POPSIZE * N_PARAMS)) - 1)


FULL = Config()
QUICK = Config(n_images=80, image_size=32, epochs=2, n_attacked=1, n_seed=1, popsize=2, max_generations=3,
               name="quick")


def line(name: str, value: Any) -> None:
    """One aligned `name  value` report line."""
    print(f"  {name:<{NAME_WIDTH}} {value}")


def header(title: str) -> None:
    print(f"\n== {title} ==")


def verdict(cfg: Config, met: bool) -> str:
    if cfg.name != "full":
        return "not checked at quick sizes"
    return "met" if met else "MISSED"


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    """(result, wall seconds) of one call."""
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


# -- model and images ---------------------------------------------------------------------------------


def train_model(cfg: Config) -> tuple[TorchImageModel, np.ndarray, np.ndarray, float]:
    """Seeded synthetic lesions, a grouped split, a trained MobileNetV3-small; returns (model, test images, test
    labels, training seconds)."""
    images, labels, lesion_ids = synthetic_lesions(cfg.n_images, cfg.image_size, seed=SEED)
    split = grouped_split(labels, lesion_ids, seed=SEED)
    train, val, test = (split == "train"), (split == "val"), (split == "test")
    model, seconds = timed(lambda: train_image_model(
        "mobilenet_v3_small", images[train], labels[train], images[val], labels[val], epochs=cfg.epochs,
        batch_size=cfg.train_batch, lr=cfg.lr, image_size=cfg.image_size, seed=SEED, progress=False))
    model.batch_size = cfg.vulnbench_batch
    return model, images[test], labels[test], seconds


def pick_attacked(model: ImageModel, images: np.ndarray, labels: np.ndarray,
                  cfg: Config) -> tuple[np.ndarray, np.ndarray, str]:
    """Indices of the test images to attack and their clean P(predicted class): the correctly classified melanomas
    (upstream's rule). A quick-size model may have none; it then attacks any test image away from its prediction."""
    probabilities = softmax32(model.logits(images))
    predicted = probabilities.argmax(axis=1)
    correct = np.flatnonzero((labels == MELANOMA_LABEL) & (predicted == MELANOMA))
    rule = "test melanomas predicted melanoma"
    if len(correct) == 0 and cfg.name != "full":
        correct, rule = np.arange(len(images)), "test images (no melanoma predicted correctly at quick sizes)"
    chosen = correct[: cfg.n_attacked]
    return chosen, probabilities[chosen, predicted[chosen]], rule


def raw_throughput(model: ImageModel, image: np.ndarray, repeats: int = 5) -> float:
    """Images/s of `model.logits` on one batch of THROUGHPUT_BATCH images (median of repeats, after a warm-up)."""
    batch = np.repeat(image[None], THROUGHPUT_BATCH, axis=0)
    previous = getattr(model, "batch_size", None)
    if previous is not None:
        model.batch_size = THROUGHPUT_BATCH
    model.logits(batch)
    seconds = statistics.median(timed(lambda: model.logits(batch))[1] for _ in range(repeats))
    if previous is not None:
        model.batch_size = previous
    return THROUGHPUT_BATCH / seconds


def onnxruntime_throughput(model: TorchImageModel, image: np.ndarray) -> float:
    """Images/s of the same network exported to ONNX and run by onnxruntime (within the benchmark's threads): the
    other CPU inference engine at hand, to show whether a faster forward pass than vulnbench's exists here."""
    import tempfile

    from vulnbench.img.models import OnnxImageModel, export_onnx

    with tempfile.TemporaryDirectory() as folder, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = os.path.join(folder, "model.onnx")
        export_onnx(model, path)
        return raw_throughput(OnnxImageModel(path, batch_size=THROUGHPUT_BATCH), image)


class EvalOnceModel:
    """The plain network as upstream scored it: eval mode set once, inference mode, no input checks and no folded
    inference copy. Same numbers as `TorchImageModel.logits` (to float rounding); no chunking, as the seed's way scores
    one image at a time."""

    def __init__(self, model: TorchImageModel) -> None:
        self.model, self.classes, self.image_size = model, model.classes, model.image_size
        model.module.eval()

    def logits(self, images: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            x = normalize(to_unit_tensor(images, self.model.device))
            return self.model.module(x).float().cpu().numpy()


# -- ART ------------------------------------------------------------------------------------------------


class PixelScaleModule(nn.Module):
    """[0, 255] float NCHW → ÷255 → ImageNet normalisation → the network: vulnbench's own input pipeline, for ART.

    Counts the images it scores, so ART's forward passes are measured rather than inferred."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network
        self.n_images = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.n_images += int(x.shape[0])
        return self.network(normalize(x / 255.0))


class ArtPixelAttack:
    """ART's PixelAttack (th=3, es=1) on the same network, one image per `generate` call (as ART loops anyway)."""

    def __init__(self, model: TorchImageModel, max_iter: int) -> None:
        from art.attacks.evasion import PixelAttack
        from art.estimators.classification import PyTorchClassifier

        self.wrapper = PixelScaleModule(model.module).eval()
        size = model.image_size
        self.classifier = PyTorchClassifier(
            model=self.wrapper, loss=nn.CrossEntropyLoss(), input_shape=(3, size, size),
            nb_classes=len(model.classes), clip_values=(0.0, 255.0), channels_first=True, device_type="cpu")
        self.attack = PixelAttack(self.classifier, th=N_PIXELS, es=1, max_iter=max_iter, targeted=False,
                                  verbose=False)

    def logits(self, images: np.ndarray) -> np.ndarray:
        """ART's view of uint8 NHWC images (for checking it scores exactly what vulnbench scores)."""
        return self.classifier.predict(images.transpose(0, 3, 1, 2).astype(np.float32))

    def __call__(self, image: np.ndarray, seed: int) -> tuple[np.ndarray, int]:
        """(adversarial uint8 (H, W, 3) — the image itself when ART failed, images scored)."""
        np.random.seed(seed % 2**32)  # ART's vendored DE draws from NumPy's global RNG (seed=None)
        before = self.wrapper.n_images
        adversarial = self.attack.generate(image.transpose(2, 0, 1)[None].astype(np.float32))
        n_forward = self.wrapper.n_images - before
        return np.clip(np.rint(adversarial[0]), 0, 255).astype(np.uint8).transpose(1, 2, 0), n_forward


# -- runs -----------------------------------------------------------------------------------------------


@dataclass
class MethodRuns:
    """Per-image outcomes of one method, keyed by the attacked image's position."""

    name: str
    budget: str
    seconds: dict[int, float] = field(default_factory=dict)
    n_forward: dict[int, int] = field(default_factory=dict)
    flipped: dict[int, bool] = field(default_factory=dict)
    confident: dict[int, bool] = field(default_factory=dict)

    def add(self, position: int, seconds: float, n_forward: int, flipped: bool, confident: bool) -> None:
        self.seconds[position], self.n_forward[position] = seconds, n_forward
        self.flipped[position], self.confident[position] = flipped, confident

    def time_per_image(self, positions: Sequence[int] | None = None) -> float:
        keys = list(self.seconds) if positions is None else list(positions)
        return sum(self.seconds[k] for k in keys) / len(keys)

    def flips(self, positions: Sequence[int] | None = None) -> tuple[int, int]:
        keys = list(self.flipped) if positions is None else list(positions)
        return sum(self.flipped[k] for k in keys), len(keys)


def art_default_max_iter() -> int:
    """PixelAttack's own default number of generations (read from ART, not assumed)."""
    import inspect

    from art.attacks.evasion import PixelAttack

    return int(inspect.signature(PixelAttack.__init__).parameters["max_iter"].default)


def art_budget(max_iter: int) -> str:
    art_population = ART_POPSIZE * N_PARAMS
    return (f"≤ {art_population * (max_iter + 1) + max_iter + 2:,} forwards (population {art_population} × "
            f"{max_iter + 1} + a callback forward per generation + clean + final check), predict batch 128")


def budgets(cfg: Config) -> dict[str, str]:
    """The most forwards each method may spend on one image, and how it spends them."""
    generations = cfg.max_generations + 1  # initial population + max_generations (seed: + its off-by-one)
    ours = (f"≤ {cfg.de_budget + 1:,} forwards (population {cfg.population} × {generations} + the clean image), "
            "one batched call per generation")
    return {
        "seed": f"≈ {cfg.de_budget + generations + N_PARAMS + 2:,} forwards, batch 1 (population {cfg.population} × "
                f"{generations} + a callback forward per generation + polish + clean)",
        "ART": art_budget(cfg.art_max_iter),
        ART_SHIPPED: art_budget(art_default_max_iter()),
        "vulnbench (probability)": ours, "vulnbench (margin)": ours, STOP_AT_FLIP: ours,
    }


def run_methods(model: TorchImageModel, images: np.ndarray, cfg: Config,
                arts: dict[str, ArtPixelAttack]) -> dict[str, MethodRuns]:
    """Attack every image with each method, image by image (the seed's way only on the first cfg.n_seed)."""
    runs = {name: MethodRuns(name, budget) for name, budget in budgets(cfg).items()}
    common = {"popsize": cfg.popsize, "max_generations": cfg.max_generations}
    fast = {**common, "vectorized": True, "parity": False, "batch_size": cfg.vulnbench_batch}
    de_variants: list[tuple[str, ImageModel, dict[str, Any]]] = [
        ("vulnbench (probability)", model, {**fast, "objective": "probability"}),
        ("vulnbench (margin)", model, {**fast, "objective": "margin"}),
        (STOP_AT_FLIP, model, {**fast, "objective": "margin", "stop_confidence": 0.5}),
        ("seed", EvalOnceModel(model), {**common, "vectorized": False, "parity": True, "objective": "probability"}),
    ]
    for position, image in enumerate(images):
        seed = image_seed(SEED, position)
        search = pixel_search(N_PIXELS)
        for name, attacked_model, options in de_variants:
            if name == "seed" and position >= cfg.n_seed:
                continue
            result, seconds = timed(partial(de_attack, attacked_model, image, search, seed=seed, **options))
            runs[name].add(position, seconds, result.n_forward, result.success, result.confident_success)
        for name, art in arts.items():
            (adversarial, n_forward), seconds = timed(partial(art, image, seed))
            probabilities = softmax32(model.logits(np.stack([image, adversarial])))  # not timed, not counted
            original = int(probabilities[0].argmax())
            flipped = int(probabilities[1].argmax()) != original
            runs[name].add(position, seconds, n_forward, flipped, flipped and probabilities[1, 1 - original] > 0.9)
    return runs


# -- report ---------------------------------------------------------------------------------------------


def report(runs: dict[str, MethodRuns], limit: float, plain_limit: float, onnx_limit: float, cfg: Config) -> None:
    header("per method (time per image compared; images/s = images scored per second of attack)")
    for runs_of in runs.values():
        line(f"{runs_of.name} budget", runs_of.budget)
    print(f"  {'method':<24} {'images':>6} {'flips':>11} {'P>0.9':>5} {'total s':>8} {'s/image':>8} "
          f"{'forwards/image':>14} {'images/s':>9} {'of limit':>8}")
    for runs_of in runs.values():
        n = len(runs_of.seconds)
        total = sum(runs_of.seconds.values())
        forwards = sum(runs_of.n_forward.values())
        flips, _ = runs_of.flips()
        rate = f"{flips} ({flips / n:.0%})"
        print(f"  {runs_of.name:<24} {n:>6} {rate:>11} {sum(runs_of.confident.values()):>5} {total:>8.2f} "
              f"{total / n:>8.3f} {forwards / n:>14,.0f} {forwards / total:>9,.0f} {forwards / total / limit:>8.0%}")
    line("model's raw batched throughput (limit)", f"{limit:,.0f} images/s (model.logits, batch {THROUGHPUT_BATCH})")
    line("the plain network's raw throughput", f"{plain_limit:,.0f} images/s (eager, unfolded, batch "
                                              f"{THROUGHPUT_BATCH}; what ART and the seed's way score with)")
    line("the network in onnxruntime", f"{onnx_limit:,.0f} images/s (exported to ONNX, batch {THROUGHPUT_BATCH})")

    seed, art = runs["seed"], runs["ART"]
    subset = sorted(seed.seconds)
    if len(subset) < len(art.seconds):
        print(f"  (the seed's way ran on the first {len(subset)} of {len(art.seconds)} images: one candidate per "
              "forward pass is too slow for all; its ratio uses vulnbench's time on the same images)")
    for objective in ("probability", "margin"):
        ours = runs[f"vulnbench ({objective})"]
        vs_seed = seed.time_per_image(subset) / ours.time_per_image(subset)
        vs_art = art.time_per_image() / ours.time_per_image()
        print(f"ratio seed/vulnbench ({objective}): {vs_seed:.1f}x per image on {len(subset)} image(s) "
              f"(target ≥ {TARGET_VS_SEED:.0f}x: {verdict(cfg, vs_seed >= TARGET_VS_SEED)})")
        print(f"ratio ART/vulnbench ({objective}): {vs_art:.1f}x per image on {len(art.seconds)} image(s) "
              f"(target ≥ {TARGET_VS_ART:.0f}x: {verdict(cfg, vs_art >= TARGET_VS_ART)})")
        ours_subset, seed_subset = ours.flips(subset), seed.flips(subset)
        ours_all, art_all = ours.flips(), art.flips()
        no_lower = (ours_subset[0] >= seed_subset[0]) and (ours_all[0] >= art_all[0])
        print(f"success vulnbench ({objective}): {ours_all[0]}/{ours_all[1]} vs ART {art_all[0]}/{art_all[1]}; "
              f"{ours_subset[0]}/{ours_subset[1]} vs seed {seed_subset[0]}/{seed_subset[1]} on the seed's images "
              f"(target: no lower: {verdict(cfg, no_lower)})")
    art_rate = sum(art.n_forward.values()) / sum(art.seconds.values())
    fastest = max(limit, onnx_limit)
    print(f"ceiling of ART/vulnbench at equal budgets: {fastest / art_rate:.1f}x (the fastest forward measured here, "
          f"{fastest:,.0f} images/s, over ART's {art_rate:,.0f} images/s: with every candidate scored, no attack "
          "can do better on this machine)")
    shipped = runs[ART_SHIPPED]
    for objective in ("probability", "margin"):
        ours = runs[f"vulnbench ({objective})"]
        vs_shipped = shipped.time_per_image() / ours.time_per_image()
        no_lower = ours.flips()[0] >= shipped.flips()[0]
        print(f"ratio ART as shipped/vulnbench ({objective}), each at its own settings: {vs_shipped:.1f}x per image "
              f"(≥ {TARGET_VS_ART:.0f}x: {verdict(cfg, vs_shipped >= TARGET_VS_ART)}), success "
              f"{ours.flips()[0]}/{ours.flips()[1]} vs {shipped.flips()[0]}/{shipped.flips()[1]} "
              f"(no lower: {verdict(cfg, no_lower)})")
    diagnostic = runs[STOP_AT_FLIP]
    print(f"ratio ART/vulnbench (margin, stop at the first flip like ART): "
          f"{art.time_per_image() / diagnostic.time_per_image():.1f}x per image, success "
          f"{diagnostic.flips()[0]}/{diagnostic.flips()[1]} (diagnostic, not a target)")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes for a smoke run (well under a minute)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: two thrash on a busy 2-core machine)")
    args = parser.parse_args(argv)
    cfg = QUICK if args.quick else FULL
    use_threads(args.threads)  # torch, BLAS and onnxruntime alike
    kept = keep_freed_memory()
    torch.manual_seed(SEED)
    logging.getLogger("art").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=UserWarning)
    started = time.perf_counter()
    print(f"3-pixel attack benchmark ({cfg.name}): synthetic_lesions {cfg.n_images} images at {cfg.image_size} px, "
          f"seed {SEED}; torch threads {torch.get_num_threads()}; freed memory kept: {kept}; "
          f"load average {os.getloadavg()[0]:.1f} at start")

    header("model and attacked images")
    with contextlib.redirect_stderr(io.StringIO()):
        model, test_images, test_labels, train_seconds = train_model(cfg)
    best = max(model.history, key=lambda record: record["val_accuracy"])
    line("MobileNetV3-small training", f"{cfg.epochs} epochs, lr {cfg.lr}, batch {cfg.train_batch}, "
                                       f"{train_seconds:.1f} s; best val accuracy {best['val_accuracy']:.3f} "
                                       f"(epoch {best['epoch']})")
    test_accuracy = float((np.asarray(model.classes)[model.logits(test_images).argmax(1)] == test_labels).mean())
    majority = max(np.mean(test_labels == MELANOMA_LABEL), np.mean(test_labels != MELANOMA_LABEL))
    line("test accuracy", f"{test_accuracy:.3f} on {len(test_labels)} images (majority class {majority:.3f})")
    chosen, confidence, rule = pick_attacked(model, test_images, test_labels, cfg)
    if len(chosen) == 0:
        raise SystemExit("no correctly classified test melanoma to attack: train longer or on more images")
    images = test_images[chosen]
    line("attacked", f"{len(chosen)} {rule}; clean P(predicted) {confidence.min():.3f}–{confidence.max():.3f}")
    limit = raw_throughput(model, images[0])
    plain_limit = raw_throughput(EvalOnceModel(model), images[0])
    onnx_limit = onnxruntime_throughput(model, images[0])
    art = ArtPixelAttack(model, cfg.art_max_iter)
    arts = {"ART": art, ART_SHIPPED: ArtPixelAttack(model, art_default_max_iter())}
    reference = model.logits(images)
    difference = float(np.abs(art.logits(images) - reference).max())
    line("ART wrapper vs model.logits", f"max |Δ logit| {difference:.1e} on the attacked images (same input pipeline)")
    difference = float(np.abs(EvalOnceModel(model).logits(images) - reference).max())
    line("seed's model adapter vs model.logits", f"max |Δ logit| {difference:.1e} on the attacked images")

    header("attacks")
    runs = run_methods(model, images, cfg, arts)
    report(runs, limit, plain_limit, onnx_limit, cfg)
    print(f"\ntotal benchmark time: {time.perf_counter() - started:.1f} s "
          f"(load average {os.getloadavg()[0]:.1f} at the end)")


if __name__ == "__main__":
    main()
