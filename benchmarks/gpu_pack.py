"""Packing on a GPU: trials per hour packed (`gpu: auto`, `pack: auto`) vs one trial per quarter GPU.

    python benchmarks/gpu_pack.py [EXPERIMENT] [--steps N] [--seeds 0,1]

Runs the experiment (default: the quickstart, shortened to --steps) twice through the real runner on
this machine's GPU: unpacked, four trials sharing each GPU (`resources.gpu: 0.25`, `pack: 1`), then
packed (`pack: auto`: up to 32 trials vectorised in one process per GPU). Prints wall time, trials per
hour, the ratio, the mean GPU utilisation (nvidia-smi, sampled every second) and the peak GPU memory
of each run. First, in this process, the experiment's first-seed cells evaluated on the GPU with their
model calls batched (what a pack does there) vs member by member. Meant to finish in under 8 minutes
on one modern GPU; needs a CUDA build of torch.
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import ray
import torch
from pack_throughput import evaluation  # benchmarks/ is on the path when run as a script

from ablate.experiment import load_experiment
from ablate.runner import run_experiment


class GpuSampler(threading.Thread):
    """Utilisation and memory of GPU 0 from nvidia-smi, once a second, until stopped."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.samples: list[tuple[float, float]] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        query = ["nvidia-smi", "--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits", "-i", "0"]
        while not self.stopping.wait(1.0):
            try:
                used, memory = subprocess.run(query, capture_output=True, text=True, timeout=5).stdout.split(",")
                self.samples.append((float(used), float(memory)))
            except (OSError, ValueError, subprocess.SubprocessError):
                continue

    def summary(self) -> str:
        if not self.samples:
            return "no nvidia-smi samples"
        utilisation = sum(u for u, _ in self.samples) / len(self.samples)
        return f"GPU utilisation {utilisation:.0f} % (mean), memory {max(m for _, m in self.samples):.0f} MiB (peak)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("experiment", nargs="?", default="experiments/quickstart.yaml")
    parser.add_argument("--steps", type=int, default=500, help="training steps per trial (train.steps)")
    parser.add_argument("--seeds", default="0,1", help="seeds, comma-separated")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("gpu_pack.py needs a GPU and a CUDA build of torch")
    evaluation(args.experiment, device="cuda")
    common = [f"train.steps={args.steps}", f"seeds=[{args.seeds}]", "eval.steps=[1,4]"]
    runs = {
        "one trial per quarter GPU": ["resources.gpu=0.25", "pack=1"],
        "packed": ["resources.gpu=auto", "pack=auto"],
    }
    ray.init(address="local", include_dashboard=False, log_to_driver=False)
    per_hour = {}
    try:
        for label, overrides in runs.items():
            experiment = load_experiment(args.experiment, [*common, *overrides])
            sampler = GpuSampler()
            sampler.start()
            with tempfile.TemporaryDirectory() as folder:
                start = time.perf_counter()
                outcome = run_experiment(experiment, Path(folder) / "out", verbose=False)
                seconds = time.perf_counter() - start
            sampler.stopping.set()
            per_hour[label] = 3600 * outcome.finished / seconds
            print(
                f"{label}: {outcome.finished}/{outcome.expected} trials in {len(experiment.packs())} Tune trials, "
                f"{seconds:.1f} s, {per_hour[label]:.0f} trials/hour; {sampler.summary()}",
                flush=True,
            )
    finally:
        ray.shutdown()
    ratio = per_hour["packed"] / per_hour["one trial per quarter GPU"]
    print(f"packed / one trial per quarter GPU: {ratio:.1f}x trials per hour ({args.steps} steps per trial)")


if __name__ == "__main__":
    main()
