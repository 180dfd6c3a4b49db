"""Tests of the `lstm-gpu-bench` command and its parts.

Behaviour only, never timings: benchmarks measure, tests assert what the command does.
torch, Keras and matplotlib are optional; their parts are skipped when they are absent.
"""
from __future__ import annotations

import importlib.util
import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from lstm_gpu._xp import gpu_available
from lstm_gpu.bench import cli, engine, env_info, report, timing
from lstm_gpu.bench.cases import Case, Grid, make_data, make_mask
from lstm_gpu.bench.engine import Bench, Settings, compare
from lstm_gpu.bench.progress import Progress
from lstm_gpu.bench.runners import Outputs, PathSkipped, Prepared, Runner

HAS_GPU = gpu_available()


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _layer_available() -> bool:
    try:
        from lstm_gpu import LSTM  # noqa: F401
    except ImportError:
        return False
    return True


needs_layer = pytest.mark.skipif(not _layer_available(), reason="lstm_gpu.LSTM not importable")


def _run_main(tmp_path, *extra):
    js, md = tmp_path / "out.json", tmp_path / "out.md"
    rc = cli.main(["--quick", "--quiet", "--json", str(js), "--markdown", str(md), *extra])
    return rc, json.loads(js.read_text()), md.read_text()


# ----------------------------------------------------------------------------- end to end


@needs_layer
def test_quick_run_writes_json_and_markdown(tmp_path, capsys):
    rc, doc, md = _run_main(tmp_path, "--paths", "numpy,cudnn,cuda-kernels")
    out = capsys.readouterr().out
    assert rc == cli.EXIT_OK
    assert doc["schema"] == report.SCHEMA
    env = doc["environment"]
    for key in ("device", "gpu", "cpu", "python", "versions"):
        assert key in env
    for key in ("lstm-gpu", "numpy", "cupy", "torch", "keras"):
        assert key in env["versions"]
    assert {"repeats", "warmup", "seed", "baseline"} <= set(doc["settings"])
    assert [p["name"] for p in doc["paths"]] == ["numpy", "cudnn", "cuda-kernels"]
    results = doc["results"]
    n_cases = len({json.dumps(r["case"], sort_keys=True) for r in results})
    assert len(results) == 3 * n_cases
    timed = [r for r in results if r["path"] == "numpy"]
    assert timed and all(r["status"] == "ok" for r in timed)
    for r in timed:
        assert r["check"]["max_abs_diff"] == 0.0
        t = r["timing"]
        assert t["repeats"] >= 1 and t["timer"] == "host"
        assert t["q1_s"] <= t["median_s"] <= t["q3_s"]
        assert r["per_step_s"] == pytest.approx(t["median_s"] / r["case"]["timesteps"])
        assert r["ratio"] == pytest.approx(1.0)
    assert {r["case"]["mode"] for r in results} == {"inference", "training"}
    assert "| batch | path |" in md and "numpy" in md
    assert "numpy" in out and "median ms" in out


@needs_layer
@pytest.mark.skipif(HAS_GPU, reason="checks the CPU-only behaviour")
def test_gpu_paths_are_skipped_with_a_reason_on_cpu(tmp_path, capsys):
    rc, doc, md = _run_main(tmp_path, "--paths", "numpy,cudnn,cuda-kernels")
    out = capsys.readouterr().out
    assert rc == cli.EXIT_OK
    assert "No CUDA GPU found" in out
    assert doc["environment"]["gpu"] is None
    assert doc["settings"]["baseline"] == "numpy"
    for r in doc["results"]:
        if r["path"] in ("cudnn", "cuda-kernels"):
            assert r["status"] == "skipped" and r["timing"] is None
            assert "GPU" in r["reason"] or "CuPy" in r["reason"]
    path = {p["name"]: p for p in doc["paths"]}
    assert not path["cudnn"]["available"] and path["cudnn"]["reason"]
    assert "Skipped:" in out and "cudnn:" in out


@needs_layer
@pytest.mark.skipif(not _has("torch"), reason="torch not installed")
def test_torch_peer_matches_numpy(tmp_path):
    rc, doc, _ = _run_main(tmp_path, "--paths", "numpy,torch,torch-native",
                           "--mask", "none,right,left")
    assert rc == cli.EXIT_OK
    torch_rows = [r for r in doc["results"] if r["path"] == "torch"]
    assert {r["status"] for r in torch_rows if r["case"]["mask"] != "left"} == {"ok"}
    for r in torch_rows:
        if r["case"]["mask"] == "left":
            assert r["status"] == "skipped" and "right-padded" in r["reason"]
        else:
            assert r["check"]["max_abs_diff"] < 1e-4
    assert "torch" in doc["environment"]["versions"]


@needs_layer
def test_cpu_native_is_timed_beside_numpy_and_torch_is_the_cpu_baseline(tmp_path):
    from lstm_gpu.paths import cpu_native

    before = os.environ.get("LSTM_GPU_CPU_PATH")
    rc, doc, md = _run_main(tmp_path, "--paths", "cpu-native,numpy,torch", "--mask",
                            "none,left", "--recurrent-dropout", "0,0.25")
    assert rc == cli.EXIT_OK
    assert os.environ.get("LSTM_GPU_CPU_PATH") == before  # the bench leaves the choice alone
    assert cpu_native.set_cpu_path(None) is None
    rows = [r for r in doc["results"] if r["path"] == "cpu-native"]
    if not cpu_native.is_available():
        assert {r["status"] for r in rows} == {"skipped"}
        return
    assert {r["status"] for r in rows} == {"ok"}, [r["reason"] for r in rows]
    assert "cpu-native (" in md
    torch_ok = _has("torch")
    assert doc["settings"]["baseline"] == ("torch" if torch_ok else "numpy")
    for r in rows:  # left masks are torch's gap: those rows fall back to numpy
        want = "torch" if torch_ok and r["case"]["mask"] != "left" and not (
            r["case"]["recurrent_dropout"] and r["case"]["mode"] == "training") else "numpy"
        assert r["baseline"] == want, r["case"]


@needs_layer
@pytest.mark.keras
@pytest.mark.skipif(not _has("keras"), reason="keras not installed")
def test_keras_peer_matches_numpy(tmp_path):
    rc, doc, _ = _run_main(tmp_path, "--paths", "numpy,keras", "--batch", "2",
                           "--mask", "right", "--recurrent-dropout", "0,0.25")
    assert rc == cli.EXIT_OK, [r["reason"] for r in doc["results"]]
    rows = [r for r in doc["results"] if r["path"] == "keras"]
    assert rows and all(r["status"] in ("ok", "skipped") for r in rows)
    dropout_training = [r for r in rows if r["status"] == "ok"
                        and r["case"]["recurrent_dropout"] and r["case"]["mode"] == "training"]
    for r in dropout_training:
        assert r["check"]["on"] == "same case without recurrent dropout"


@pytest.mark.skipif(not _has("matplotlib"), reason="matplotlib not installed")
@needs_layer
def test_plot_is_a_png(tmp_path):
    png = tmp_path / "plot.png"
    assert cli.main(["--quick", "--quiet", "--paths", "numpy", "--plot", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.skipif(_has("matplotlib"), reason="matplotlib is installed")
def test_plot_without_matplotlib_says_how_to_get_it(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["--quick", "--plot", str(tmp_path / "p.png")])
    assert e.value.code == cli.EXIT_USAGE
    assert "lstm-gpu[plot]" in capsys.readouterr().err


def test_module_entry_point_and_list_paths():
    done = subprocess.run([sys.executable, "-m", "lstm_gpu.bench", "--list-paths",
                           "--paths", "numpy,cudnn"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert "cudnn" in done.stdout and "numpy" in done.stdout


def test_bad_options_are_usage_errors(capsys):
    for argv in (["--batch", "0"], ["--mask", "middle"], ["--recurrent-dropout", "1.5"]):
        with pytest.raises(SystemExit) as e:
            cli.main(argv)
        assert e.value.code == cli.EXIT_USAGE


def test_grid_options_override_the_default_grid():
    args = cli.build_parser().parse_args(
        ["--quick", "--batch", "1,4", "16", "--units", "3", "--mode", "both", "--dtype",
         "float64"])
    grid = cli.make_grid(args, on_gpu=False)
    assert grid.batch == (1, 4, 16) and grid.units == (3,)
    assert grid.mode == ("inference", "training") and grid.dtype == ("float64",)
    assert len(grid.cases()) == 3 * 2 * len(grid.timesteps) * len(grid.features)


# ----------------------------------------------------------------------------- the check


def _ref_outputs(data, shift=0.0):
    last = data.x.sum(axis=1) @ np.ones((data.x.shape[2], 3)) + shift
    dx = None if data.d_out is None else np.full_like(data.x, 0.5) + shift
    return Outputs(last=last.astype(data.x.dtype), dx=dx)


class FakeRunner(Runner):
    """A path computing a fixed function of the inputs, off by `shift`; counts timed calls."""

    def __init__(self, name, shift=0.0, fail=None, skip=None, unsupported=None):
        self.name, self.shift, self.fail = name, shift, fail
        self.skip, self._unsupported = skip, unsupported
        self.calls = 0

    def unsupported(self, case):
        return self._unsupported

    def prepare(self, case, data):
        def run():
            self.calls += 1

        def fetch():
            if self.fail:
                raise self.fail
            if self.skip:
                raise PathSkipped(self.skip)
            return _ref_outputs(data, self.shift)

        return Prepared(run=run, fetch=fetch, timer=timing.HostTimer())


def _bench(*runners):
    reference = FakeRunner("numpy")
    return Bench([reference, *runners], Settings(repeats=3, warmup=1, budget_s=None),
                 reference=reference), reference


CASES = [Case(2, 5, 4, 3, mode="inference"), Case(2, 5, 4, 3, mode="training")]


def test_cpu_paths_are_timed_after_a_pause(monkeypatch):
    """Settings.settle_s: before timing a CPU path the bench waits for the worker threads the
    previous library left spinning to sleep (they would take a core from the path timed)."""
    pauses = []
    monkeypatch.setattr(engine.time, "sleep", pauses.append)
    path = FakeRunner("path")
    bench, _ = _bench(path)
    bench.settings.settle_s = 0.25
    bench.run(CASES[:1])
    assert pauses == [0.25, 0.25]  # the reference and the path, each before its timing
    parser = cli.build_parser()
    assert cli._settings(parser.parse_args([]), False, "numpy").settle_s == 0.25
    assert cli._settings(parser.parse_args(["--quick"]), False, "numpy").settle_s == 0.0


def test_a_wrong_path_is_reported_not_timed():
    wrong, right = FakeRunner("wrong", shift=1e-2), FakeRunner("right", shift=1e-7)
    bench, _ = _bench(wrong, right)
    results = bench.run(CASES)
    for r in results:
        if r.path == "wrong":
            assert r.status == engine.MISMATCH and r.stats is None and r.ratio is None
            assert "max |diff|" in r.reason
            assert r.check.max_abs_diff == pytest.approx(1e-2, rel=1e-3)
        else:
            assert r.status == engine.OK and r.stats is not None
    assert wrong.calls == 0 and right.calls > 0


def test_errors_and_declines_are_reported_not_timed():
    boom = FakeRunner("boom", fail=RuntimeError("kernel launch failed"))
    declines = FakeRunner("declines", skip="not eligible for cuDNN: mask")
    cannot = FakeRunner("cannot", unsupported="no such feature")
    bench, _ = _bench(boom, declines, cannot)
    by_path = {r.path: r for r in bench.run(CASES[:1])}
    assert by_path["boom"].status == engine.ERROR
    assert "kernel launch failed" in by_path["boom"].reason
    assert by_path["declines"].status == engine.SKIPPED
    assert by_path["declines"].reason == "not eligible for cuDNN: mask"
    assert by_path["cannot"].reason == "no such feature"
    assert boom.calls == declines.calls == cannot.calls == 0


def test_no_reference_means_nothing_else_is_timed():
    other = FakeRunner("other")
    broken = FakeRunner("numpy", fail=ImportError("no layer"))
    bench = Bench([broken, other], Settings(repeats=3, budget_s=None), reference=broken)
    by_path = {r.path: r for r in bench.run(CASES[:1])}
    assert by_path["other"].status == engine.ERROR and "no reference" in by_path["other"].reason
    assert other.calls == 0


def test_main_exits_1_on_a_mismatch(monkeypatch, tmp_path, capsys):
    fakes = {"numpy": FakeRunner("numpy"), "cudnn": FakeRunner("cudnn", shift=0.5)}
    monkeypatch.setattr(cli, "make_runner", lambda name: fakes[name])
    js = tmp_path / "r.json"
    rc = cli.main(["--quick", "--quiet", "--paths", "numpy,cudnn", "--json", str(js)])
    out = capsys.readouterr().out
    assert rc == cli.EXIT_FAILED
    assert "MISMATCH" in out and "Not timed" in out
    statuses = {r["status"] for r in json.loads(js.read_text())["results"]
                if r["path"] == "cudnn"}
    assert statuses == {"mismatch"}


def test_compare_tolerances_shapes_and_nan():
    r = Outputs(last=np.ones((2, 3), np.float32), dx=np.full((2, 4, 5), 100.0, np.float32))
    ok = compare(r, Outputs(last=r.last + 1e-6, dx=r.dx * (1 + 1e-6)), "float32")
    assert ok.passed and ok.compared == ["last_output", "input_gradient"]
    assert not compare(r, Outputs(last=r.last + 1e-3, dx=r.dx), "float32").passed
    nan = r.last.copy()
    nan[0, 0] = np.nan
    assert not compare(r, Outputs(last=nan, dx=r.dx), "float32").passed
    bad = compare(r, Outputs(last=r.last[:1], dx=r.dx), "float32")
    assert not bad.passed and "shape" in bad.worst
    assert not compare(r, Outputs(last=r.last, dx=None), "float32").passed


# ----------------------------------------------------------------------------- timing


def test_quartiles_match_numpy():
    rng = np.random.default_rng(1)
    for n in (1, 2, 5, 10, 11):
        xs = list(rng.random(n))
        q1, med, q3 = timing.quartiles(xs)
        assert (q1, med, q3) == pytest.approx(tuple(np.percentile(xs, [25, 50, 75])))


def test_summarize():
    s = timing.summarize([3.0, 1.0, 2.0, 4.0, 100.0], number=7, timer="cuda-event")
    assert s.median == 3.0 and s.min == 1.0 and s.max == 100.0
    assert s.q1 == 2.0 and s.q3 == 4.0 and s.iqr == 2.0
    assert s.repeats == 5 and s.number == 7
    j = s.to_json()
    assert j["median_s"] == 3.0 and j["timer"] == "cuda-event" and j["number"] == 7
    with pytest.raises(ValueError):
        timing.quartiles([])


def test_plan_repeats_respects_budget_and_floor():
    assert timing.plan_repeats(0.01, 10, None) == 10
    assert timing.plan_repeats(0.01, 10, 1.0) == 10
    assert timing.plan_repeats(0.5, 10, 1.0) == 3
    assert timing.plan_repeats(0.2, 10, 1.0) == 5
    assert timing.plan_repeats(5.0, 2, 1.0) == 2


class FakeClock:
    """A timer whose every call of the timed function costs `cost` seconds."""

    kind = "host"

    def __init__(self, cost):
        self.cost, self.calls, self.syncs = cost, 0, 0

    def fn(self):
        self.calls += 1

    def start(self):
        self.syncs += 1
        self._c0 = self.calls

    def stop(self):
        return (self.calls - self._c0) * self.cost


def test_measure_warms_up_and_batches_short_calls():
    clock = FakeClock(cost=1e-4)  # shorter than the host floor: batched
    stats = timing.measure(clock.fn, clock, repeats=4, warmup=2)
    number = stats.number
    assert number == int(np.ceil(timing.MIN_SAMPLE_S["host"] / 1e-4))
    assert stats.repeats == 4 and stats.median == pytest.approx(1e-4)
    assert clock.calls == 2 + 4 * number and clock.syncs == 2 + 4
    slow = FakeClock(cost=1.0)
    stats = timing.measure(slow.fn, slow, repeats=10, warmup=1, budget_s=3.5)
    assert stats.number == 1 and stats.repeats == 3


# ----------------------------------------------------------------------------- cases etc.


@pytest.mark.parametrize("kind", ["right", "left"])
def test_masks(kind):
    rng = np.random.default_rng(0)
    mask, lengths = make_mask(kind, 16, 9, rng)
    assert mask.shape == (16, 9) and mask.dtype == bool
    assert lengths[0] == 9 and lengths.min() >= 1
    assert (mask.sum(axis=1) == lengths).all()
    for row, n in zip(mask, lengths):
        expected = np.arange(9) < n if kind == "right" else np.arange(9) >= 9 - n
        assert (row == expected).all()
    assert make_mask("none", 3, 4, rng) == (None, None)
    with pytest.raises(ValueError):
        make_mask("middle", 3, 4, rng)


def test_data_is_reproducible_and_shared():
    case = Case(3, 4, 5, 6, mode="training", mask="right")
    a, b = make_data(case, seed=1), make_data(case, seed=1)
    assert np.array_equal(a.x, b.x) and np.array_equal(a.mask, b.mask)
    assert [w.shape for w in a.weights] == [(5, 24), (6, 24), (24,)]
    assert a.d_out.shape == (3, 6) and a.x.dtype == np.float32
    assert not np.array_equal(a.x, make_data(case, seed=2).x)
    assert make_data(Case(3, 4, 5, 6), seed=1).d_out is None


def test_grid_groups_batches_together():
    cases = Grid(batch=(1, 2), timesteps=(3,), features=(4,), units=(5,),
                 mode=("inference", "training")).cases()
    assert [(c.batch, c.mode) for c in cases] == [
        (1, "inference"), (2, "inference"), (1, "training"), (2, "training")]


def test_report_groups_skips_and_marks_dropout_checks():
    bench, _ = _bench(FakeRunner("never", unsupported="needs a GPU"),
                      FakeRunner("wrong", shift=1.0))
    results = bench.run(CASES)
    text = report.render(results, env_info.collect())
    assert text.count("never: needs a GPU") == 1  # once, not once per case
    assert "wrong on B=2" in text and "MISMATCH" in text
    md = report.render(results, env_info.collect(), markdown=True, command="lstm-gpu-bench")
    assert md.startswith("# lstm-gpu-bench results") and "`lstm-gpu-bench`" in md
    assert "|---:|---|" in md


def test_env_info_and_device_slug():
    env = env_info.collect()
    assert env["device"] and env["cpu"]["logical_cores"]
    assert env["versions"]["numpy"] == np.__version__
    assert env_info.device_slug({"gpu": {"name": "NVIDIA H100 80GB HBM3"}}) == \
        "nvidia-h100-80gb-hbm3"
    assert env_info.cuda_version_text(12040) == "12.4"
    assert env_info._cudnn_version_text(90100) == "9.1.0"
    json.dumps(env)  # JSON-able


def test_progress_only_on_a_terminal():
    pipe = io.StringIO()
    bar = Progress(stream=pipe)
    bar(1, 4, "x")
    bar.close()
    assert pipe.getvalue() == ""

    class Tty(io.StringIO):
        def isatty(self):
            return True

    tty = Tty()
    bar = Progress(stream=tty)
    bar(1, 4, "case")
    assert "[" in tty.getvalue() and "1/4" in tty.getvalue()
    bar.close()
    assert Progress(stream=Tty(), enabled=False).enabled is False


def test_cudnn_version_from_the_binding(monkeypatch):
    import types

    pkg = types.ModuleType("lstm_gpu.cuda.cudnn")
    pkg.__path__ = []
    api = types.ModuleType("lstm_gpu.cuda.cudnn.api")
    api.version = lambda: 90100
    monkeypatch.setitem(sys.modules, "lstm_gpu.cuda.cudnn", pkg)
    monkeypatch.setitem(sys.modules, "lstm_gpu.cuda.cudnn.api", api)
    assert env_info.cudnn_version() == "9.1.0"

    def no_library():
        raise OSError("libcudnn.so.9 not found")

    api.version = no_library
    assert env_info.cudnn_version() is None


def test_console_script_runs_quick_on_this_machine():
    """The installed `lstm-gpu-bench` command (CI installs the package) runs --quick."""
    import shutil

    exe = shutil.which("lstm-gpu-bench")
    if exe is None:
        pytest.skip("lstm-gpu-bench is not on PATH (package not installed)")
    done = subprocess.run([exe, "--quick", "--quiet", "--paths", "numpy"], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "numpy" in done.stdout
