"""8x8 digits (scikit-learn's bundled copy, no download): the smallest image task with FID-style metrics.

The 1797 images are split once, deterministically, into a training half (the data and the metrics'
reference) and a held-out half (the noise floor: what real, unseen digits score). Metrics live in the
feature space of a small frozen classifier trained on the training half with a fixed seed. It is cached on
disk (written atomically, so concurrent trials never read half a file) and, when the cache is missing,
rebuilt to the same weights.
"""

from __future__ import annotations

import math
import os
import tempfile
import threading
from pathlib import Path

import torch
from sklearn.datasets import load_digits
from torch import Tensor, nn

from ablate.metrics import class_entropy, frechet_distance_from_stats, gaussian_fit, kernel_inception_distance
from ablate.tasks import Declarations, Evaluation, Sampler, gate_condition
from ablate.tasks.models import ResidualMLP

N_IMAGES = 1797  # scikit-learn's bundled load_digits; the held-out half is the larger one
N_HELD_OUT = N_IMAGES - N_IMAGES // 2
SPLIT_SEED = 0
CLASSIFIER_SEED = 0
CLASSIFIER_VERSION = 1  # bump when the classifier or its training changes, so old caches are not reused
N_CLASSES = 10


def digit_splits() -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(train images, train labels, held-out images, held-out labels); images (n, 8, 8) in [-1, 1]."""
    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32) / 8 - 1  # pixel values are 0..16
    labels = torch.tensor(digits.target, dtype=torch.int64)
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(SPLIT_SEED))
    train, held_out = order[: len(order) // 2], order[len(order) // 2 :]
    return images[train], labels[train], images[held_out], labels[held_out]


class DigitClassifier(nn.Module):
    """64 -> 128 -> 32 -> 10 MLP; the 32 penultimate activations are the feature space for FD and KID
    (few enough dimensions for a well-conditioned covariance from ~900 samples)."""

    feature_dim = 32

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Flatten(), nn.Linear(64, 128), nn.SiLU(), nn.Linear(128, self.feature_dim), nn.SiLU()
        )
        self.head = nn.Linear(self.feature_dim, N_CLASSES)

    def features(self, images: Tensor) -> Tensor:
        return self.body(images)

    def forward(self, images: Tensor) -> Tensor:
        return self.head(self.features(images))


def train_classifier(images: Tensor, labels: Tensor, steps: int = 200) -> DigitClassifier:
    """Full-batch Adam from a fixed seed: deterministic, and it leaves torch's global RNG untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(CLASSIFIER_SEED)
        classifier = DigitClassifier()
    optimizer = torch.optim.Adam(classifier.parameters(), lr=1e-2, weight_decay=1e-4)
    for _ in range(steps):
        loss = nn.functional.cross_entropy(classifier(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return classifier.eval().requires_grad_(False)


def cache_dir() -> Path:
    """`$ABLATE_CACHE`, else ~/.cache/ablate."""
    return Path(os.environ.get("ABLATE_CACHE") or Path.home() / ".cache" / "ablate")


_BUILDING = threading.Lock()  # a pack evaluates its members in threads; the classifier is built once


def load_or_build_classifier(images: Tensor, labels: Tensor) -> DigitClassifier:
    """The cached classifier; built, then written via a temporary file and os.replace, when missing.
    One thread at a time: building seeds torch's global RNG, which threads share."""
    with _BUILDING:
        return _load_or_build_classifier(images, labels)


def _load_or_build_classifier(images: Tensor, labels: Tensor) -> DigitClassifier:
    path = cache_dir() / f"digits_classifier_v{CLASSIFIER_VERSION}.pt"
    if path.is_file():
        classifier = DigitClassifier()
        classifier.load_state_dict(torch.load(path, weights_only=True))
        return classifier.eval().requires_grad_(False)
    classifier = train_classifier(images, labels)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=path.name, suffix=".tmp", delete=False) as tmp:
        torch.save(classifier.state_dict(), tmp)
    os.replace(tmp.name, path)
    return classifier


class Scorer:
    """FD, KID and class coverage of images against a reference set, in the classifier's feature space.

    Features are standardised with the reference's per-dimension mean and std, so KID's cubic kernel
    (x.y / dim + 1)^3 sees O(1) inputs and both distances are in units of the reference's spread.
    """

    def __init__(self, classifier: DigitClassifier, reference_images: Tensor) -> None:
        self.classifier = classifier
        with torch.no_grad():
            raw = classifier.features(reference_images)
        self.mean, self.std = raw.mean(0), raw.std(0).clamp(min=1e-6)
        self.reference = self.features(reference_images)
        self.reference_fit = gaussian_fit(self.reference)

    @torch.no_grad()
    def features(self, images: Tensor) -> Tensor:
        return (self.classifier.features(images) - self.mean) / self.std

    @torch.no_grad()
    def __call__(self, images: Tensor) -> dict[str, float]:
        """NaN/inf images (a diverged sampler) give inf distances and NaN coverage instead of errors."""
        if not torch.isfinite(images).all():
            return {"fd": math.inf, "kid": math.inf, "class_entropy": math.nan}
        predicted = self.classifier(images).argmax(1)
        features = self.features(images)
        return {
            "fd": frechet_distance_from_stats(*gaussian_fit(features), *self.reference_fit),
            "kid": kernel_inception_distance(features, self.reference),
            "class_entropy": class_entropy(predicted, N_CLASSES),
        }


class DigitsTask:
    """8x8 digits; primary metric the Frechet distance in the frozen classifier's features (lower is better)."""

    name = "digits"
    sample_format = "image"
    lead_dims = 1
    primary_metric = "fd"
    metric_directions = {
        "fd": "min",
        "kid": "min",
        "class_entropy": "max",
        "fd_floor": "min",
        "kid_floor": "min",
        "class_entropy_floor": "max",
    }
    # distances in the classifier's features change by factors; the class entropy is a score in [0, 1]
    metric_scales = {"fd": "log", "kid": "log", "class_entropy": "raw"}
    metric_scales |= {f"{name}_floor": scale for name, scale in metric_scales.items()}
    # The flow baseline at K = k_max must come within 2x of what held-out real digits score
    # (docs/learnability.md; benchmarks/learnability.py).
    learnability_gate = [gate_condition("fd", "<=", relative_to="fd_floor", factor=2.0)]
    max_samples = 256

    def __init__(self, n_eval: int | None = None, hidden: int = 128, depth: int = 3, layer_norm: bool = True) -> None:
        """`n_eval` samples per K (default: the held-out half's size, so samples and floor share the FD bias);
        `hidden`/`depth`: width and residual blocks of the MLP x-predictor; `layer_norm: false` removes its
        LayerNorms (a stabiliser to ablate)."""
        self.train_images, self.train_labels, self.held_out_images, _ = digit_splits()
        self.n_eval = len(self.held_out_images) if n_eval is None else n_eval
        if self.n_eval < 2:
            raise ValueError(f"n_eval={n_eval!r} must be at least 2")
        self.hidden, self.depth, self.layer_norm = hidden, depth, layer_norm
        self.share_metrics = self.declare(n_eval=n_eval).share_metrics
        self._scoring: tuple[Scorer, dict[str, float]] | None = None

    @classmethod
    def declare(cls, n_eval: int | None = None, **_other_params) -> Declarations:
        """The task's declarations (ablate.tasks.Task) for these task params, without building it: the class
        entropy of n_eval samples, and its floor's of the held-out half, are scores in [0, 1]."""
        shares = {"class_entropy": N_HELD_OUT if n_eval is None else n_eval, "class_entropy_floor": N_HELD_OUT}
        return Declarations(dict(cls.metric_scales), shares, list(cls.learnability_gate))

    def batch(self, batch_size: int, generator: torch.Generator) -> tuple[Tensor, dict]:
        index = torch.randint(0, len(self.train_images), (batch_size,), generator=generator)
        return self.train_images[index], {}

    def make_model(self) -> nn.Module:
        return ResidualMLP(64, self.hidden, self.depth, self.layer_norm)

    def scoring(self) -> tuple[Scorer, dict[str, float]]:
        """The scorer (training half as reference) and the held-out half's scores as `*_floor`; built once."""
        if self._scoring is None:
            scorer = Scorer(load_or_build_classifier(self.train_images, self.train_labels), self.train_images)
            self._scoring = scorer, {f"{k}_floor": v for k, v in scorer(self.held_out_images).items()}
        return self._scoring

    def evaluate(self, sampler: Sampler, steps: list[int], generator: torch.Generator) -> Evaluation:
        """Samples per K from one noise draw, clipped to the data range [-1, 1] (as image metrics do)."""
        scorer, floor = self.scoring()
        noise = torch.randn(self.n_eval, 8, 8, generator=generator)
        metrics, samples = {}, {}
        for k in steps:
            x = sampler(noise, k).float().cpu()
            x = torch.where(torch.isfinite(x), x.clamp(-1, 1), x)  # keep NaN/inf visible to the metrics
            metrics[k] = {**scorer(x), **floor}
            samples[k] = x[: self.max_samples].clamp(-1, 1).numpy()
        return Evaluation(metrics, samples, self.held_out_images[: self.max_samples].numpy())
