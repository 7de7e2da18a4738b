"""Two-process DDP training under torchrun equals one process with the same global batch."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from cohort.recording import Cycle, Recording
from cohort.store import CohortStore
from cohort.store_format import SubjectInfo
from fusion.checkpoint import load_checkpoint
from fusion.config import load_config
from fusion.train import train_experiment

ROOT = Path(__file__).resolve().parents[1]
CONFIG = """
[data]
folds = 2
[snn]
input_size = 16
conv_channels = [4, 8]
hidden = 16
[fusion]
mode = "attention"
embed_dim = 8
heads = 2
dropout = 0.0
[training]
branches = ["snn"]
epochs = 2
batch_size = 4
lr = 0.003
[augment]
temporal_jitter = 1
"""


def make_store(path: Path, subjects: int = 8, clips: int = 3, frames: int = 8, size: int = 32) -> Path:
    """Write a store whose subjects 0 and 4 are abnormal; each has ``clips`` thermal clips."""
    rng = np.random.default_rng(1)
    with CohortStore.create(path) as store:
        for number in range(subjects):
            abnormal = number % 4 == 0
            ratio = 0.55 if abnormal else 0.80
            subject_id = f"S{number:02d}"
            store.add_subject(subject_id, SubjectInfo(age=50.0, sex="F", height_cm=165.0, fev1_fvc=ratio, pef=6.0,
                                                      label=int(abnormal)))
            recording = Recording(np.full((frames * clips, size, size), 25.0, np.float32), 8.7, "thermal", subject_id)
            cycles = [Cycle(i * frames, (i + 1) * frames) for i in range(clips)]
            values = 24.0 + 8.0 * rng.random((clips, frames, size, size)) * (0.5 if abnormal else 1.0)
            store.add_recording(subject_id, "thermal", recording, cycles, values.astype(np.float32))
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_two_processes_equal_one(tmp_path):
    store = make_store(tmp_path / "store.h5")
    config_path = tmp_path / "ddp.toml"
    config_path.write_text(CONFIG)

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train_experiment(load_config(config_path), store, tmp_path / "single", progress=False)
    finally:
        torch.set_num_threads(previous)

    command = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc_per_node=2",
               "--master_addr=127.0.0.1", f"--master_port={free_port()}",
               "-m", "fusion", "train", "--config", str(config_path), "--store", str(store),
               "--out", str(tmp_path / "ddp"), "--threads", "1"]
    environment = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    completed = subprocess.run(command, cwd=ROOT, env=environment, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert completed.stdout.count("trained 2 fold models") == 1

    for fold in (0, 1):
        single = load_checkpoint(tmp_path / "single" / "thermal" / "snn" / f"fold{fold}" / "last.pt")
        ddp = load_checkpoint(tmp_path / "ddp" / "thermal" / "snn" / f"fold{fold}" / "last.pt")
        assert ddp["epoch"] == 2
        assert [round(entry["loss"], 5) for entry in ddp["history"]] == [
            round(entry["loss"], 5) for entry in single["history"]]
        for name, tensor in single["model"].items():
            torch.testing.assert_close(ddp["model"][name], tensor, rtol=0.0, atol=1e-6, msg=f"fold {fold} {name}")
        changed = any(not torch.equal(tensor, ddp["model"][name]) for name, tensor in
                      load_checkpoint(tmp_path / "single" / "thermal" / "snn" / f"fold{1 - fold}" / "last.pt")[
                          "model"].items())
        assert changed
