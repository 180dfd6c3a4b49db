"""`lstm-gpu-bench --bidirectional`: every path wrapped in Bidirectional (concat), checked
against lstm_gpu's NumPy Bidirectional before it is timed. Behaviour only, never timings."""
from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

from lstm_gpu import LSTM
from lstm_gpu.bench import cli
from lstm_gpu.bench.cases import Case, make_data
from lstm_gpu.bench.runners import make_runner


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _run(tmp_path, *extra):
    js, md = tmp_path / "out.json", tmp_path / "out.md"
    rc = cli.main(["--quick", "--quiet", "--bidirectional", "--repeats", "1", "--warmup", "0",
                   "--json", str(js), "--markdown", str(md), *extra])
    return rc, json.loads(js.read_text()), md.read_text()


def test_flag_makes_every_case_bidirectional():
    args = cli.build_parser().parse_args(["--quick", "--bidirectional"])
    cases = cli.make_grid(args, on_gpu=False).cases()
    assert cases and all(c.bidirectional for c in cases)
    assert all("bidirectional" in c.label for c in cases)
    plain = cli.make_grid(cli.build_parser().parse_args(["--quick"]), on_gpu=False).cases()
    assert not any(c.bidirectional for c in plain)


def test_data_holds_both_directions_weights():
    case = Case(3, 4, 2, 5, mode="training", bidirectional=True)
    data = make_data(case)
    assert [w.shape for w in data.weights] == [(2, 20), (5, 20), (20,)] * 2
    assert not np.array_equal(data.weights[0], data.weights[3])
    assert data.d_out.shape == (3, 10)


def test_numpy_runner_is_the_two_directions_concatenated(monkeypatch):
    """The runner's weight split and merge, checked against two plain LSTMs on its path."""
    monkeypatch.setenv("LSTM_GPU_CPU_PATH", "numpy")
    case = Case(3, 4, 2, 5, dtype="float64", mode="training", mask="right",
                bidirectional=True)
    data = make_data(case)
    got = make_runner("numpy").prepare(case, data).fetch()
    halves, dx = [], 0
    for k, go_backwards in enumerate((False, True)):
        layer = LSTM(5, go_backwards=go_backwards, dtype="float64")
        layer.build(data.x.shape)
        layer.set_weights(data.weights[3 * k:3 * k + 3])
        halves.append(layer(data.x, mask=data.mask, training=True))
        dx = dx + layer.backward(data.d_out[:, 5 * k:5 * k + 5])["inputs"]
    np.testing.assert_allclose(got.last, np.concatenate(halves, axis=1), rtol=1e-14)
    np.testing.assert_allclose(got.dx, dx, rtol=1e-14, atol=1e-15)


def test_quick_bidirectional_run(tmp_path, capsys):
    rc, doc, md = _run(tmp_path, "--paths", "numpy,cudnn,cuda-kernels")
    assert rc == cli.EXIT_OK
    rows = [r for r in doc["results"] if r["path"] == "numpy"]
    assert rows and all(r["status"] == "ok" and r["case"]["bidirectional"] for r in rows)
    assert "bidirectional" in md and "bidirectional" in capsys.readouterr().out


@pytest.mark.skipif(not _has("torch"), reason="torch not installed")
def test_torch_bidirectional_peer_matches_numpy(tmp_path):
    rc, doc, _ = _run(tmp_path, "--paths", "numpy,torch", "--mask", "none,right")
    assert rc == cli.EXIT_OK
    rows = [r for r in doc["results"] if r["path"] == "torch"]
    assert rows and {r["status"] for r in rows} == {"ok"}, [r["reason"] for r in rows]
    assert all(r["check"]["max_abs_diff"] < 1e-4 for r in rows)
    assert {tuple(r["check"]["compared"]) for r in rows} >= {("last_output", "input_gradient")}


@pytest.mark.keras
@pytest.mark.skipif(not _has("keras"), reason="keras not installed")
def test_keras_bidirectional_peer_matches_numpy(tmp_path):
    rc, doc, _ = _run(tmp_path, "--paths", "numpy,keras", "--batch", "2", "--mask", "right")
    assert rc == cli.EXIT_OK, [r["reason"] for r in doc["results"]]
    rows = [r for r in doc["results"] if r["path"] == "keras"]
    assert rows and {r["status"] for r in rows} == {"ok"}, [r["reason"] for r in rows]
    assert all(r["check"]["max_abs_diff"] < 1e-4 for r in rows)
