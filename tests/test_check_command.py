"""`lstm-gpu-check` end to end on this machine: the console script after an install, the
JSON, exit statuses, and test doubles injected through the registry the command uses.

Without a GPU (CI) the command checks the CPU paths, reports every GPU path as unavailable
with its reason and exits 0; a wrong path makes it exit 1 and name the failing case.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

try:
    from tests import lstm_testlib as T_
except ImportError:  # tests/ itself on sys.path
    import lstm_testlib as T_

from lstm_gpu._xp import gpu_available
from lstm_gpu.check import cli, grid, report
from lstm_gpu.check.registry import CheckPath, LayerRoute, Registry, default_registry
from lstm_gpu.errors import PathUnavailable
from lstm_gpu.paths import numpy_ref

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SUMMARY = re.compile(r"^(\d+) passed, (\d+) failed$")
GPU_PATHS = ("cupy-reference", "cudnn", "cuda-kernels:eager", "cuda-kernels:graph", "auto")


def _installed_script():
    """The console script beside this interpreter (a `pip install` creates it), or None."""
    here = os.path.join(os.path.dirname(sys.executable), "lstm-gpu-check")
    return here if os.path.exists(here) else shutil.which("lstm-gpu-check")


def _summary(text: str) -> tuple[int, int]:
    last = text.rstrip("\n").splitlines()[-1]
    m = SUMMARY.match(last)
    assert m, f"the last line is not 'N passed, M failed': {last!r}"
    return int(m.group(1)), int(m.group(2))


def _run(capsys, *argv, registry=None):
    rc = cli.main(list(argv), registry=registry)
    return rc, capsys.readouterr().out


def _check_cpu_document(doc: dict, passed: int) -> None:
    assert doc["schema"] == report.SCHEMA
    assert doc["summary"] == {"passed": passed, "failed": 0, "skipped": doc["summary"]["skipped"],
                              "exit_status": 0}
    paths = {p["name"]: p for p in doc["paths"]}
    assert paths["numpy"]["available"] and paths["numpy"]["passed"] > 0
    for name in ("cpu-native", *GPU_PATHS):
        if name in paths and not paths[name]["available"]:
            assert paths[name]["reason"], name  # every unavailable path says why
    env = doc["environment"]
    for label in ("lstm_gpu", "Python", "NumPy", "CuPy", "CUDA", "GPU", "cuDNN", "cuBLAS",
                  "NVRTC", "CUDA kernels"):
        fact = env[label]
        assert fact["value"] is not None or fact["why"], label
    assert doc["tolerances"]["float64"] == {"outputs": 1e-10, "gradients": 1e-10}
    numpy_results = [r for r in doc["results"] if r["path"] == "numpy"]
    assert {r["group"] for r in numpy_results} == {"masks", "states", "dropout", "activations",
                                                   "layer"}
    for r in numpy_results:
        assert r["status"] in ("passed", "skipped"), r
        if r["status"] == "passed":
            assert r["error"] <= r["tolerance"]


@pytest.mark.skipif(gpu_available(), reason="checks what the command does without a GPU")
def test_console_script_on_a_cpu_machine(tmp_path):
    script = _installed_script()
    if script is None:
        pytest.skip("lstm-gpu-check is not installed here (pip install -e . creates it; the "
                    "in-process tests below run the same main)")
    out = tmp_path / "check.json"
    proc = subprocess.run([script, "--quick", "--json", str(out)], capture_output=True,
                          text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    passed, failed = _summary(proc.stdout)
    assert failed == 0 and passed > 0
    for name in GPU_PATHS:
        assert re.search(rf"^  {re.escape(name)}\s+unavailable: \S", proc.stdout, re.M), name
    _check_cpu_document(json.loads(out.read_text()), passed)


@pytest.mark.skipif(gpu_available(), reason="checks what the command does without a GPU")
def test_default_grid_on_a_cpu_machine(tmp_path, capsys):
    out = tmp_path / "check.json"
    rc, text = _run(capsys, "--json", str(out))
    assert rc == cli.EXIT_OK, text
    passed, failed = _summary(text)
    assert failed == 0 and passed > 100
    assert "Environment" in text and "Tolerances" in text and "1e-10" in text
    doc = json.loads(out.read_text())
    _check_cpu_document(doc, passed)
    assert doc["command"] == f"lstm-gpu-check --json {out}"
    # float16 is the layer's on the CPU: its path problems are skipped with the reason
    skipped = [r for r in doc["results"] if r["status"] == "skipped"]
    assert skipped and all(r["dtype"] == "float16" and "takes" in r["reason"] for r in skipped)


def test_python_dash_m_runs_the_same_command():
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-m", "lstm_gpu.check", "--quick", "--paths",
                           "numpy", "--dtype", "float64"], capture_output=True, text=True,
                          timeout=300, env=env, cwd=REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    passed, failed = _summary(proc.stdout)
    assert passed > 0 and failed == 0


# ----------------------------------------------------------------------------- test doubles


def _registry(*doubles: CheckPath) -> Registry:
    r = default_registry()
    for d in doubles:
        r.add(d)
    return r


class _WrongOnHoles:
    """The NumPy path, but its carry is off by 1e-6 when a mask has a hole: the kind of bug
    a path with a mishandled mask would have."""

    @staticmethod
    def forward(weights, x, mask, h0, c0, spec, dropout, training):
        res = numpy_ref.forward(weights, x, mask, h0, c0, spec, dropout, training)
        if mask is not None and any(np.diff(row.astype(int)).clip(0).sum() + row[0] > 1
                                    for row in mask.T):
            res.c = res.c + 1e-6
        return res

    backward = staticmethod(numpy_ref.backward)


def test_a_wrong_path_fails_and_the_failing_case_is_named(tmp_path, capsys):
    wrong = CheckPath("wrong", "a deliberately wrong path", lambda: None,
                      module=lambda: _WrongOnHoles)
    out = tmp_path / "check.json"
    rc, text = _run(capsys, "--quick", "--paths", "numpy,wrong", "--dtype", "float64",
                    "--json", str(out), registry=_registry(wrong))
    assert rc == cli.EXIT_FAILED
    passed, failed = _summary(text)
    assert failed == 1 and passed > 0
    line = next(s for s in text.splitlines() if s.startswith("  wrong ") and " masks " in s)
    assert " FAIL " in line
    assert re.search(r"FAIL masks/holes T7 B5 F3 U4 \[float64\]: (inference )?c: "
                     r"error [0-9.e-]+ exceeds tolerance 1e-10", text), text
    assert cli.REPORT_HINT in text
    doc = json.loads(out.read_text())
    assert doc["summary"]["failed"] == 1 and doc["summary"]["exit_status"] == 1
    bad = [r for r in doc["results"] if r["status"] == "failed"]
    assert [(r["path"], r["case"], r["worst_array"]) for r in bad] == \
        [("wrong", "masks/holes T7 B5 F3 U4", "c")]
    # the other groups of the wrong path, and the numpy path, passed
    assert all(line["result"] == "PASS" for line in doc["lines"]
               if not (line["path"] == "wrong" and line["group"] == "masks"))


class _Crashes:
    @staticmethod
    def forward(*args):
        raise RuntimeError("the device fell over")

    backward = forward


class _Declines:
    @staticmethod
    def forward(*args):
        raise PathUnavailable("this path serves nothing")

    backward = forward


def _broken_import():
    raise ImportError("no module named lstm_gpu.paths.broken")


def _broken_availability():
    raise OSError("the driver query failed")


def test_a_crash_fails_that_path_and_the_others_still_run(capsys):
    doubles = [CheckPath("crashes", "raises in every case", lambda: None,
                         module=lambda: _Crashes),
               CheckPath("declines", "raises PathUnavailable", lambda: None,
                         module=lambda: _Declines),
               CheckPath("broken-import", "its module does not import", lambda: None,
                         module=_broken_import),
               CheckPath("broken-check", "its availability check raises",
                         _broken_availability)]
    rc, text = _run(capsys, "--quick", "--dtype", "float64", "--paths",
                    "crashes,declines,broken-import,broken-check,numpy",
                    registry=_registry(*doubles))
    assert rc == cli.EXIT_FAILED
    assert "RuntimeError: the device fell over" in text
    assert "PathUnavailable: this path serves nothing" in text
    assert re.search(r"broken-import\s+FAIL\s+the path failed outside its cases: ImportError",
                     text)
    assert re.search(r"broken-check\s+unavailable: its availability check failed: OSError",
                     text)
    numpy_lines = [s for s in text.splitlines() if s.startswith("  numpy ")]
    assert numpy_lines and all(" PASS " in s for s in numpy_lines)
    passed, failed = _summary(text)
    # every problem of two paths, and the path whose module does not import
    assert passed > 0 and failed == 2 * len(grid.path_problems("quick")) + 1


def test_a_layer_call_on_the_wrong_path_fails(capsys):
    claims_cudnn = CheckPath("claims-cudnn", "NumPy input, but expects cuDNN", lambda: None,
                             layer=LayerRoute(expected="cudnn"))
    rc, text = _run(capsys, "--quick", "--dtype", "float64", "--paths", "claims-cudnn",
                    registry=_registry(claims_cudnn))
    assert rc == cli.EXIT_FAILED
    assert f"the layer ran {T_.expected_cpu_path()}, expected cudnn" in text


def test_counters_that_show_no_replay_fail(capsys):
    counts = {"replays": 0, "captures": 0, "fallbacks": 0}

    def counters():
        counts["fallbacks"] += 1  # one capture fell back during the run
        return dict(counts)

    from lstm_gpu.check.registry import graph_counters_problem

    fake_graph = CheckPath("fake-graph", "counters of a loop that never replays", lambda: None,
                           module=lambda: numpy_ref, counters=counters,
                           counters_problem=graph_counters_problem)
    rc, text = _run(capsys, "--quick", "--dtype", "float64", "--paths", "fake-graph",
                    registry=_registry(fake_graph))
    assert rc == cli.EXIT_FAILED
    assert re.search(r"fake-graph\s+counters\s+FAIL", text)
    assert "1 CUDA graph capture(s) fell back to eager loops" in text
    assert graph_counters_problem({"replays": 5, "fallbacks": 0}) is None
    assert "no CUDA graph replay" in graph_counters_problem({"replays": 0, "captures": 2})


# ----------------------------------------------------------------------------- options


@pytest.mark.parametrize("argv", [["--paths", "nope"], ["--dtype", "float8"],
                                  ["--device", "-1"], ["--quick", "extra"],
                                  ["--json", os.path.join("no", "such", "dir", "x.json")]])
def test_usage_errors_exit_2(argv, capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == cli.EXIT_USAGE
    assert "usage: lstm-gpu-check" in capsys.readouterr().err


def test_nothing_to_check_is_not_a_pass(capsys):
    unavailable = CheckPath("nowhere", "cannot run here", lambda: "no such hardware")
    rc, text = _run(capsys, "--paths", "nowhere", registry=_registry(unavailable))
    assert rc == cli.EXIT_FAILED
    assert "Nothing was checked" in text and _summary(text) == (0, 0)


def test_list_paths(capsys):
    rc, text = _run(capsys, "--list-paths")
    assert rc == cli.EXIT_OK
    names = [s.split()[0] for s in text.splitlines()]
    assert names == default_registry().names()
    assert re.search(r"^  numpy\s+available$", text, re.M)


def test_family_names_select_every_loop_mode():
    r = default_registry()
    assert [p.name for p in r.select(["cuda-kernels"])] == ["cuda-kernels:eager",
                                                            "cuda-kernels:graph"]
    assert [p.name for p in r.select(["cuda-kernels:graph", "numpy"])] == \
        ["numpy", "cuda-kernels:graph"]
    with pytest.raises(ValueError, match="unknown path"):
        r.select(["cuda"])
    with pytest.raises(ValueError, match="registered already"):
        r.add(CheckPath("numpy", "again", lambda: None))


@pytest.mark.skipif(gpu_available(), reason="the note is for machines without a GPU")
def test_device_without_a_gpu_is_noted(capsys):
    rc, text = _run(capsys, "--quick", "--paths", "numpy", "--dtype", "float64", "--device",
                    "0")
    assert rc == cli.EXIT_OK
    assert "--device 0 ignored: " in text


@pytest.mark.skipif(gpu_available(), reason="checks what the script does without a GPU")
def test_gpu_check_script_runs_the_command(tmp_path):
    env = dict(os.environ, PYTHON=sys.executable)
    proc = subprocess.run(["bash", os.path.join(REPO, "bench", "gpu_check.sh"), "check",
                           str(tmp_path)], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert _summary(proc.stdout)[1] == 0
    assert [p.name for p in tmp_path.iterdir()] == ["check.json"]
    assert json.loads((tmp_path / "check.json").read_text())["summary"]["exit_status"] == 0
