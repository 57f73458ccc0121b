"""Run by tests/train/test_engine.py under ``torchrun --nproc_per_node 2``: one tiny DDP training run."""

import sys
from pathlib import Path

import mrisr

if __name__ == "__main__":
    protocol, volume, out = (Path(a) for a in sys.argv[1:4])
    mrisr.train(protocol, [volume], out, epochs=2, device="cpu", progress=False, seed=3)
