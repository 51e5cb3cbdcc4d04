"""The one training loop. Methods supply ``training_step``; this owns everything else.

Iterations, LR schedule, the two-stream batch stream, validation and model selection, resume
checkpoints (exact on CPU: all randomness is derived from (seed, iteration)), SIGTERM/SIGUSR1
preemption, the per-iteration CSV log, progress lines and the self-describing run record.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch

from ssnet.allocator import apply_cpu_allocator
from ssnet.config import config_hash
from ssnet.data.loading import BatchStream, read_sample, training_loader, training_split, training_stream
from ssnet.datasets import get_dataset
from ssnet.engine import run_info
from ssnet.engine.run_info import RunOutputs
from ssnet.engine.checkpoint import (
    build_method,
    git_commit,
    load_resume_checkpoint,
    load_torch,
    previous_checkpoint,
    save_model,
    save_resume_checkpoint,
    save_torch,
    versions,
)
from ssnet.devices import pinned_gpu
from ssnet.engine.schedule import learning_rate
from ssnet.evaluation.predict import dice_per_class, predict_case
from ssnet.io import write_csv
from ssnet.jobs import warn
from ssnet.methods.base import Batch, StepContext
from ssnet.networks.fusion import network_for_inference
from ssnet.runtime import memory_format, resolve_device
from ssnet.seeding import seed_everything, seed_iteration, set_deterministic, worker_init_fn


class Preempted(SystemExit):
    """Raised after a checkpoint was written because the scheduler asked the job to stop."""


class _StopFlag:
    """Set by SIGTERM/SIGUSR1 (what SLURM sends before killing a job); checked once per iteration."""

    def __init__(self):
        self.signal: int | None = None

    @contextlib.contextmanager
    def installed(self):
        previous = {}
        for sig in (signal.SIGTERM, signal.SIGUSR1):
            with contextlib.suppress(ValueError):  # not in the main thread
                previous[sig] = signal.signal(sig, self._handle)
        try:
            yield self
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _handle(self, signum, frame):
        self.signal = signum


def _worker_init(worker_id: int) -> None:
    """Data-loading workers ignore the stop signals: SLURM (and a terminal) signal every process of the
    job, and a worker killed by SIGTERM would make the DataLoader raise in the main process before it
    has written its checkpoint. The main process shuts the workers down when it stops."""
    for sig in (signal.SIGTERM, signal.SIGUSR1):
        signal.signal(sig, signal.SIG_IGN)
    worker_init_fn(worker_id)


def is_new_best(score: float, best: float, mode: str) -> bool:
    """Whether a validation ``score`` replaces the ``best`` kept so far (-1 before the first).

    ``best_test`` follows the reference LA loop (SS-Net code/train_ss_3d.py): ``score > best`` against
    the ROUNDED best (see :func:`kept_best_score`), which starts at 0, so a score of 0 is never kept.
    """
    return score > (max(best, 0.0) if mode == "best_test" else best)


def kept_best_score(score: float, mode: str) -> float:
    """The best score as stored: ``best_test`` keeps ``round(score, 4)`` (Python's round, as the
    reference's ``best_dice = round(dice_sample, 4)``); other modes the score itself."""
    return round(score, 4) if mode == "best_test" else score


class Trainer:
    """Trains one (dataset, method, labelled, seed) run."""

    def __init__(self, run_cfg: dict, seed: int, data_root: str | Path, checkpoint_dir: str | Path,
                 threads: int = 1, progress: Callable[[str], None] | None = None):
        self.cfg, self.seed = run_cfg, int(seed)
        self.data_root, self.checkpoint_dir = Path(data_root), Path(checkpoint_dir)
        self.training, self.selection = run_cfg["training"], run_cfg["selection"]
        self.dataset = get_dataset(run_cfg["dataset"])
        self.device = resolve_device(run_cfg["device"])
        self.progress = progress or (lambda line: print(line, file=sys.stderr, flush=True))
        self.tag = f"[{run_cfg['dataset']}/{run_cfg['method']}/{run_cfg['labelled']}/seed{seed}]"
        torch.set_num_threads(max(1, int(threads)))
        set_deterministic(bool(run_cfg["deterministic"]))
        torch.backends.cudnn.benchmark = bool(run_cfg["cudnn_benchmark"])
        self.hash = config_hash({"run": run_cfg, "seed": self.seed})
        apply_cpu_allocator(run_cfg, self.progress)
        self.memory_format = memory_format(bool(run_cfg["channels_last"]), self.dataset.dim)
        seed_everything(self.seed)  # weight initialisation
        self.method = build_method(run_cfg).to(self.device, memory_format=self.memory_format)
        self.optimizer = torch.optim.SGD(self.method.optimised_parameters(), lr=self.training["lr"],
                                         momentum=self.training["momentum"],
                                         weight_decay=self.training["weight_decay"])
        self.amp = bool(run_cfg["amp"]) and self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.split = training_split(self.data_root, self.dataset, run_cfg["labelled"], self.selection)
        self.log_rows: list[dict] = []
        self.val_rows: list[dict] = []
        self.best = {"score": -1.0, "iteration": 0}
        self.start = 0
        self.seconds: float | None = None  # wall time of fit()

    # ----------------------------------------------------------------------------------- data
    def batch_stream(self) -> BatchStream:
        return training_stream(self.data_root, self.dataset, self.split, self.training, self.seed,
                               self.method.uses_unlabelled, self.start)

    def batches(self):
        return training_loader(self.batch_stream(), int(self.training["num_workers"]),
                               pin_memory=self.device.type == "cuda", worker_init_fn=_worker_init)

    # ----------------------------------------------------------------------------- validation
    def validate(self) -> float:
        """Mean over the validation volumes of their mean foreground Dice (selection criterion).

        ``best_test`` scores as the reference LA selection (SS-Net code/utils/test_3d_patch.py
        ``var_all_case_LA``): no largest-component step, case scores summed in list order and divided
        by their number.
        """
        on_test = self.selection["mode"] == "best_test"
        inference = {**self.cfg["inference"], "largest_component": False} if on_test else self.cfg["inference"]
        network = network_for_inference(self.method.inference_network(), inference, self.device)
        scores = []
        for name in self.split.validation:
            image, label = read_sample(self.dataset.case_path(self.data_root, name))
            prediction = predict_case(network, image, self.dataset, inference, self.device)
            scores.append(float(np.mean(dice_per_class(prediction, label, self.dataset.n_classes))))
        self.method.train()
        return sum(scores) / len(scores) if on_test else float(np.mean(scores))

    def validation_due(self, done: int) -> bool:
        if self.selection["mode"] == "last":
            return False
        return done >= self.selection["val_start"] and done % self.selection["val_every"] == 0

    def maybe_validate(self, done: int) -> None:
        if not self.validation_due(done):
            return
        score = self.validate()
        self.val_rows.append({"iteration": done, "val_dice": score})
        self.progress(f"{self.tag} it {done}: validation Dice {score:.4f} (best {max(score, self.best['score']):.4f})")
        if is_new_best(score, self.best["score"], self.selection["mode"]):
            self.best = {"score": kept_best_score(score, self.selection["mode"]), "iteration": done}
            save_torch(self.checkpoint_dir / "best.pt", {"iteration": done, "state_dict": self.method.state_dict()})

    # ----------------------------------------------------------------------------- checkpoints
    @property
    def resume_path(self) -> Path:
        return self.checkpoint_dir / "last.pt"

    def save_checkpoint(self, done: int) -> None:
        save_resume_checkpoint(self.resume_path, {
            "config_hash": self.hash, "iteration": done, "state_dict": self.method.state_dict(),
            "extra": self.method.extra_state_dict(), "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(), "best": self.best, "log_rows": self.log_rows,
            "val_rows": self.val_rows,
        })

    def try_resume(self) -> None:
        state = load_resume_checkpoint(self.resume_path, lambda message: warn(f"{self.tag} {message}"))
        if state is None:
            return
        if state["config_hash"] != self.hash:
            self.progress(f"{self.tag} ignoring {self.resume_path}: written with another configuration")
            return
        self.method.load_state_dict(state["state_dict"])
        self.method.load_extra_state_dict(state["extra"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.best, self.log_rows, self.val_rows = state["best"], state["log_rows"], state["val_rows"]
        self.start = int(state["iteration"])
        self.progress(f"{self.tag} resumed from {self.resume_path} at iteration {self.start}")

    # ----------------------------------------------------------------------------------- loop
    def step(self, t: int, image: torch.Tensor, label: torch.Tensor) -> dict:
        seed_iteration(self.seed, t)
        lr = learning_rate(t, self.training)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        ctx = StepContext(t, self.training["iterations"], scale=self.scaler.scale)
        batch = Batch(image, label).to(self.device, self.memory_format)
        self.method.train()
        self.optimizer.zero_grad(set_to_none=True)
        with torch.autocast(self.device.type, enabled=self.amp):
            output = self.method.training_step(batch, ctx)
        ctx.backward(output.loss)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.method.after_optimizer_step(ctx)
        return {"iteration": t + 1, "lr": lr, "loss": ctx.backpropagated, **output.logs}

    def fit(self, on_iteration_end: Callable[[int], None] | None = None) -> None:
        """Run (or resume) training to ``training.iterations``; raises :class:`Preempted` on SIGTERM/SIGUSR1."""
        self.try_resume()
        total, every = self.training["iterations"], self.training["checkpoint_every"]
        started, flag = time.perf_counter(), _StopFlag()
        with flag.installed():
            for index, (image, label) in enumerate(self.batches()):
                t = self.start + index
                self.log_rows.append(self.step(t, image, label))
                done = t + 1
                self.maybe_validate(done)
                stop = flag.signal  # read once: a signal arriving later is handled after the next step
                if done % every == 0 or stop is not None:
                    self.save_checkpoint(done)
                self.report_progress(done, total, started, index + 1)
                if stop is not None:
                    raise Preempted(f"{self.tag} stopped by signal {stop} at iteration {done}; "
                                    f"checkpoint written, rerun to resume")
                if on_iteration_end:
                    on_iteration_end(done)
        self.seconds = time.perf_counter() - started

    def report_progress(self, done: int, total: int, started: float, steps: int) -> None:
        if done % self.training["log_every"] and done != total:
            return
        rate = steps / max(time.perf_counter() - started, 1e-9)
        eta = (total - done) / rate
        row = self.log_rows[-1]
        self.progress(f"{self.tag} it {done}/{total} loss {row['loss']:.4f} lr {row['lr']:.2e} "
                      f"{rate:.2f} it/s ETA {eta / 60:.1f} min")

    # -------------------------------------------------------------------------------- outputs
    def selected_weights(self) -> int:
        """Load the weights chosen by ``selection.mode``; return their iteration."""
        if self.selection["mode"] == "last" or self.best["iteration"] == 0:
            return self.training["iterations"]
        best = load_torch(self.checkpoint_dir / "best.pt")
        self.method.load_state_dict(best["state_dict"])
        return int(best["iteration"])

    def write_outputs(self, outputs: RunOutputs) -> None:
        """The selected model, the training and validation logs and the run record."""
        selected = self.selected_weights()
        save_model(outputs.model, self.method, self.cfg, self.seed, selected)
        write_csv(outputs.train_log, pd.DataFrame(self.log_rows))
        write_csv(outputs.val_log, pd.DataFrame(self.val_rows, columns=["iteration", "val_dice"]))
        run_info.write(outputs.info, self.run_record(selected))

    def run_record(self, selected: int) -> run_info.RunInfo:
        """The run's record (``run_info.json``), its weights taken at iteration ``selected``."""
        split, unlabelled = self.split, self.method.uses_unlabelled
        return run_info.RunInfo(
            dataset=self.dataset.name, method=self.cfg["method"], method_type=self.cfg["method_type"],
            labelled=self.cfg["labelled"], seed=self.seed, config_hash=self.hash, git_commit=git_commit(),
            versions=versions(), device=str(self.device), gpu=pinned_gpu(), selection=self.selection["mode"],
            test_set_selection=split.validation_is_test, selected_iteration=selected,
            best_val_dice=self.best["score"] if self.val_rows else None,
            n_labelled=len(split.labelled), n_labelled_scans=split.labelled_scans,
            n_unlabelled=len(split.unlabelled) if unlabelled else 0,
            n_unlabelled_scans=split.unlabelled_scans if unlabelled else 0,
            n_validation=len(split.validation), labelled_items=split.labelled, validation_items=split.validation,
            train_seconds=self.seconds, run_config=self.cfg, resumed_from_iteration=self.start)

    def cleanup(self) -> None:
        for path in (self.resume_path, previous_checkpoint(self.resume_path), self.checkpoint_dir / "best.pt"):
            path.unlink(missing_ok=True)


def train(run_cfg: dict, seed: int, data_root, outputs: RunOutputs, checkpoint_dir, threads: int = 1,
          keep_checkpoints: bool = False) -> None:
    """Train, select and write one run's outputs (resuming from ``checkpoint_dir`` when possible)."""
    trainer = Trainer(run_cfg, seed, data_root, checkpoint_dir, threads)
    trainer.fit()
    trainer.write_outputs(outputs)
    if not keep_checkpoints:
        trainer.cleanup()
