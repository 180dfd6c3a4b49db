"""The ctypes binding to cuDNN 9: loading, prototypes, status mapping, descriptor round trips.

Everything here works without a GPU (descriptors are host objects); tests that need the
library skip when it does not load.
"""
from __future__ import annotations

import ctypes
import os
import pickle
import subprocess
import sys

import pytest

from lstm_gpu._xp import gpu_available
from lstm_gpu.cuda import cudnn
from lstm_gpu.cuda.cudnn import _bindings as B
from lstm_gpu.cuda.cudnn import _loader
from lstm_gpu.errors import CudnnError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
needs_lib = pytest.mark.skipif(not cudnn.available(), reason="cuDNN 9 does not load here")


def _run(code: str, **env) -> subprocess.CompletedProcess:
    full_env = dict(os.environ, PYTHONPATH=REPO, **env)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=full_env, cwd=REPO, timeout=120)


# --- loader -----------------------------------------------------------------------------------


@needs_lib
def test_version_is_9():
    from lstm_gpu.cuda.cudnn import api

    v = api.version()
    assert 90000 <= v < 100000
    assert api.version_tuple()[0] == 9
    assert os.path.basename(_loader.loaded_path()).startswith("libcudnn")


def test_bad_override_gives_one_clear_message_and_import_still_works():
    r = _run(
        "import lstm_gpu, lstm_gpu.dispatch as d\n"
        "from lstm_gpu.cuda import cudnn\n"
        "print(cudnn.available())\n"
        "print(cudnn.unavailable_reason())\n"
        "print(d.cudnn_ineligibility(activation=None, recurrent_activation=None,"
        " use_bias=True, unroll=False, dropout=0, recurrent_dropout=0, training=False,"
        " mask=None, dtype='float32')[-1])\n",
        LSTM_GPU_CUDNN_PATH="/nonexistent/libcudnn.so.9",
    )
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "False"
    for text in ("pip install lstm-gpu[cuda12]", "pip install lstm-gpu[cuda13]",
                 "/nonexistent/libcudnn.so.9", "LSTM_GPU_CUDNN_PATH"):
        assert text in lines[1]
    assert lines[2].startswith("cuDNN not available: cuDNN 9 could not be loaded")


@needs_lib
def test_override_with_directory_and_debug_log():
    directory = os.path.dirname(_loader.loaded_path())
    r = _run("from lstm_gpu.cuda import cudnn; print(cudnn.available())",
             LSTM_GPU_CUDNN_PATH=directory, LSTM_GPU_DEBUG_LOAD="1")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "True"
    assert "lstm_gpu: cudnn loader:" in r.stderr and "loaded" in r.stderr


def test_debug_log_is_silent_by_default():
    r = _run("from lstm_gpu.cuda import cudnn; cudnn.available()")
    assert r.returncode == 0 and "cudnn loader" not in r.stderr


def test_sublibrary_preload_order(tmp_path):
    names = ["adv", "cnn", "engines_precompiled", "graph", "heuristic", "ops"]
    for n in names:
        (tmp_path / f"libcudnn_{n}.so.9").write_bytes(b"")
    order = [_loader._sublib_key(p) for p in _loader._ordered_sublibs(str(tmp_path))]
    assert order[:2] == ["graph", "ops"] and order[-1] == "adv"
    assert sorted(order) == sorted(names)


# --- prototypes and status --------------------------------------------------------------------


@needs_lib
def test_every_prototype_is_bound_with_types():
    from lstm_gpu.cuda.cudnn import api

    fns = api.functions()
    assert fns.missing == ()
    for name, (restype, argtypes) in B.PROTOTYPES.items():
        fn = getattr(fns, name)
        assert fn.restype == restype, name
        assert list(fn.argtypes) == list(argtypes), name
    assert fns.cudnnGetVersion.restype is ctypes.c_size_t


@needs_lib
def test_status_table_agrees_with_cudnn():
    from lstm_gpu.cuda.cudnn import api

    fns = api.functions()
    for code, name in B.STATUS_NAMES.items():
        if code == 2001:  # deprecated alias; cuDNN may print another name for it
            continue
        assert fns.cudnnGetErrorString(code).decode() == name, code


def test_status_name_unknown_code():
    from lstm_gpu.cuda.cudnn import api

    assert api.status_name(2000) == "CUDNN_STATUS_BAD_PARAM"
    assert "9999" in api.status_name(9999)


@needs_lib
def test_check_status_maps_to_cudnn_error_with_message():
    from lstm_gpu.cuda.cudnn import api

    api.check_status(0)
    with pytest.raises(CudnnError) as info:
        api.check_status(3002, "cudnnSomething")
    assert info.value.status == 3002 and info.value.name == "CUDNN_STATUS_NOT_SUPPORTED_SHAPE"
    assert "cudnnSomething" in str(info.value)
    with api.RNNDescriptor() as rnn, pytest.raises(CudnnError) as info:
        rnn.set(input_size=-3, hidden_size=4, data_type=B.DATA_FLOAT,
                math_prec=B.DATA_FLOAT, math_type=B.FMA_MATH)
    err = info.value
    assert err.name == "CUDNN_STATUS_BAD_PARAM" and err.call == "cudnnSetRNNDescriptor_v8"
    assert "inputSize" in err.message  # cuDNN's own last-error text


def test_cudnn_error_pickles():
    e = CudnnError(2000, "CUDNN_STATUS_BAD_PARAM", "bad", "cudnnRNNForward")
    e2 = pickle.loads(pickle.dumps(e))
    assert (e2.status, e2.name, e2.message, e2.call, str(e2)) == (
        e.status, e.name, e.message, e.call, str(e))


# --- descriptors ------------------------------------------------------------------------------


@needs_lib
@pytest.mark.parametrize("dtype,code", [("float16", 2), ("float32", 0), ("float64", 1)])
def test_tensor_descriptor_round_trip(dtype, code):
    from lstm_gpu.cuda.cudnn import api

    with api.TensorDescriptor() as d:
        d.set(dtype, (1, 5, 7))
        assert d.get() == (code, [1, 5, 7], [35, 7, 1])


@needs_lib
def test_rnn_descriptor_round_trip():
    from lstm_gpu.cuda.cudnn import api

    with api.DropoutDescriptor() as drop, api.RNNDescriptor() as rnn:
        rnn.set(input_size=5, hidden_size=7, data_type=B.DATA_DOUBLE, math_prec=B.DATA_DOUBLE,
                math_type=B.DEFAULT_MATH, dropout=drop)
        got = rnn.get()
    assert got == dict(algo=B.RNN_ALGO_STANDARD, cell_mode=B.LSTM, bias_mode=B.RNN_DOUBLE_BIAS,
                       dir_mode=B.UNIDIRECTIONAL, input_mode=B.LINEAR_INPUT,
                       data_type=B.DATA_DOUBLE, math_prec=B.DATA_DOUBLE,
                       math_type=B.DEFAULT_MATH, input_size=5, hidden_size=7, proj_size=7,
                       num_layers=1, dropout_desc=drop._ptr,
                       aux_flags=B.RNN_PADDED_IO_ENABLED)


@needs_lib
def test_rnn_descriptor_fp16_fp32_math():
    from lstm_gpu.cuda.cudnn import api

    with api.RNNDescriptor() as rnn:
        rnn.set(input_size=3, hidden_size=4, data_type=B.DATA_HALF, math_prec=B.DATA_FLOAT,
                math_type=B.TENSOR_OP_MATH)
        got = rnn.get()
    assert (got["data_type"], got["math_prec"], got["math_type"]) == (
        B.DATA_HALF, B.DATA_FLOAT, B.TENSOR_OP_MATH)


@needs_lib
@pytest.mark.parametrize("dtype,fill,bits", [("float32", 0.0, 0), ("float32", 1.0, 0x3F800000),
                                             ("float64", 0.0, 0), ("float16", 1.0, 0x3C00)])
def test_rnn_data_descriptor_round_trip(dtype, fill, bits):
    from lstm_gpu.cuda.cudnn import api

    with api.RNNDataDescriptor() as d:
        d.set(dtype=dtype, layout=B.SEQ_MAJOR_UNPACKED, max_seq_length=6, batch_size=3,
              vector_size=4, lengths=[6, 1, 3], padding_fill=fill)
        got = d.get(3)
    assert got["layout"] == B.SEQ_MAJOR_UNPACKED
    assert (got["max_seq_length"], got["batch_size"], got["vector_size"]) == (6, 3, 4)
    assert got["lengths"] == [6, 1, 3]
    assert got["padding_fill_bits"] == bits


@needs_lib
def test_rnn_data_descriptor_rejects_too_long_sample():
    from lstm_gpu.cuda.cudnn import api

    with api.RNNDataDescriptor() as d, pytest.raises(CudnnError) as info:
        d.set(dtype="float32", layout=B.SEQ_MAJOR_UNPACKED, max_seq_length=4, batch_size=2,
              vector_size=3, lengths=[5, 1])
    assert info.value.name == "CUDNN_STATUS_BAD_PARAM"


@needs_lib
def test_close_is_idempotent_and_closed_use_raises():
    from lstm_gpu.cuda.cudnn import api

    d = api.TensorDescriptor()
    with d:
        assert not d.closed
    assert d.closed
    d.close()
    with pytest.raises(ValueError, match="closed"):
        d.set("float32", (1, 2, 3))


@needs_lib
def test_data_type_rejects_other_dtypes():
    from lstm_gpu.cuda.cudnn import api

    with pytest.raises(TypeError):
        api.data_type("int32")


@needs_lib
@pytest.mark.skipif(gpu_available(), reason="checks the no-GPU failure")
def test_handle_without_gpu_is_a_cudnn_error():
    from lstm_gpu.cuda.cudnn import api

    with pytest.raises(CudnnError) as info:
        api.Handle()
    assert info.value.name.startswith("CUDNN_STATUS_")
    ok, why = api.can_create_handle()
    assert not ok and why


# --- the ctypes table against the headers of the library it loaded ---------------------------

# Our constant -> the header's enumerator (or #define flag).
HEADER_CONSTANTS = {
    "DATA_FLOAT": "CUDNN_DATA_FLOAT", "DATA_DOUBLE": "CUDNN_DATA_DOUBLE",
    "DATA_HALF": "CUDNN_DATA_HALF",
    "DEFAULT_MATH": "CUDNN_DEFAULT_MATH", "TENSOR_OP_MATH": "CUDNN_TENSOR_OP_MATH",
    "TENSOR_OP_MATH_ALLOW_CONVERSION": "CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION",
    "FMA_MATH": "CUDNN_FMA_MATH",
    "RNN_ALGO_STANDARD": "CUDNN_RNN_ALGO_STANDARD",
    "RNN_RELU": "CUDNN_RNN_RELU", "RNN_TANH": "CUDNN_RNN_TANH", "LSTM": "CUDNN_LSTM",
    "GRU": "CUDNN_GRU",
    "RNN_NO_BIAS": "CUDNN_RNN_NO_BIAS", "RNN_SINGLE_INP_BIAS": "CUDNN_RNN_SINGLE_INP_BIAS",
    "RNN_DOUBLE_BIAS": "CUDNN_RNN_DOUBLE_BIAS", "RNN_SINGLE_REC_BIAS": "CUDNN_RNN_SINGLE_REC_BIAS",
    "UNIDIRECTIONAL": "CUDNN_UNIDIRECTIONAL", "BIDIRECTIONAL": "CUDNN_BIDIRECTIONAL",
    "LINEAR_INPUT": "CUDNN_LINEAR_INPUT", "SKIP_INPUT": "CUDNN_SKIP_INPUT",
    "FWD_MODE_INFERENCE": "CUDNN_FWD_MODE_INFERENCE",
    "FWD_MODE_TRAINING": "CUDNN_FWD_MODE_TRAINING",
    "SEQ_MAJOR_UNPACKED": "CUDNN_RNN_DATA_LAYOUT_SEQ_MAJOR_UNPACKED",
    "SEQ_MAJOR_PACKED": "CUDNN_RNN_DATA_LAYOUT_SEQ_MAJOR_PACKED",
    "BATCH_MAJOR_UNPACKED": "CUDNN_RNN_DATA_LAYOUT_BATCH_MAJOR_UNPACKED",
    "WGRAD_MODE_ADD": "CUDNN_WGRAD_MODE_ADD", "WGRAD_MODE_SET": "CUDNN_WGRAD_MODE_SET",
    "RNN_PADDED_IO_ENABLED": "CUDNN_RNN_PADDED_IO_ENABLED",
}


@pytest.fixture(scope="module")
def headers():
    import c_headers

    if not cudnn.available():
        pytest.skip("cuDNN 9 does not load here")
    directory = c_headers.include_dir(_loader.loaded_path(), c_headers.CUDNN)
    if directory is None:
        pytest.skip(f"no cuDNN headers beside {_loader.loaded_path()}")
    return c_headers.Headers(directory, c_headers.CUDNN)


@pytest.mark.parametrize("name", sorted(B.PROTOTYPES))
def test_prototype_matches_header(headers, name):
    from c_headers import check_prototypes

    check_prototypes(headers, B.PROTOTYPES, name)


def test_constants_match_header(headers):
    for ours, theirs in HEADER_CONSTANTS.items():
        assert getattr(B, ours) == headers.constants[theirs], (ours, theirs)
