"""The training example learns: a short run's loss falls."""
import importlib.util
from pathlib import Path

import numpy as np

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "train_sine.py"


def _load_example():
    spec = importlib.util.spec_from_file_location("train_sine", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_short_training_run_reduces_the_loss():
    losses = _load_example().train(steps=60, batch=32, units=12, verbose=False)
    assert np.mean(losses[-10:]) < np.mean(losses[:10]) - 0.3
