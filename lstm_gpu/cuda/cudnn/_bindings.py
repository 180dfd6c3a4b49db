"""cuDNN 9 constants and the ctypes prototype of every function lstm_gpu calls.

Values and prototypes follow the cuDNN 9 headers (`cudnn_graph.h`, `cudnn_ops.h`,
`cudnn_adv.h`); only the v8 RNN API is bound (the v6/v7 RNN calls were removed in 9.0).
Every call goes through the shim `libcudnn.so.9`, which forwards to the sub-libraries.
"""
from __future__ import annotations

from ctypes import POINTER, c_char_p, c_double, c_float, c_int, c_int32, c_size_t, c_uint32
from ctypes import c_ulonglong, c_void_p

# --- enums (cuDNN 9 headers) -------------------------------------------------------------

STATUS_NAMES: dict[int, str] = {
    0: "CUDNN_STATUS_SUCCESS",
    1001: "CUDNN_STATUS_NOT_INITIALIZED",
    1002: "CUDNN_STATUS_SUBLIBRARY_VERSION_MISMATCH",
    1003: "CUDNN_STATUS_SERIALIZATION_VERSION_MISMATCH",
    1004: "CUDNN_STATUS_DEPRECATED",
    1005: "CUDNN_STATUS_LICENSE_ERROR",
    1006: "CUDNN_STATUS_RUNTIME_IN_PROGRESS",
    1007: "CUDNN_STATUS_RUNTIME_FP_OVERFLOW",
    1008: "CUDNN_STATUS_SUBLIBRARY_LOADING_FAILED",
    2000: "CUDNN_STATUS_BAD_PARAM",
    2001: "CUDNN_STATUS_INVALID_VALUE",
    2002: "CUDNN_STATUS_BAD_PARAM_NULL_POINTER",
    2003: "CUDNN_STATUS_BAD_PARAM_MISALIGNED_POINTER",
    2004: "CUDNN_STATUS_BAD_PARAM_NOT_FINALIZED",
    2005: "CUDNN_STATUS_BAD_PARAM_OUT_OF_BOUND",
    2006: "CUDNN_STATUS_BAD_PARAM_SIZE_INSUFFICIENT",
    2007: "CUDNN_STATUS_BAD_PARAM_STREAM_MISMATCH",
    2008: "CUDNN_STATUS_BAD_PARAM_SHAPE_MISMATCH",
    2009: "CUDNN_STATUS_BAD_PARAM_DUPLICATED_ENTRIES",
    2010: "CUDNN_STATUS_BAD_PARAM_ATTRIBUTE_TYPE",
    2011: "CUDNN_STATUS_BAD_PARAM_CUDA_GRAPH_MISMATCH",
    2012: "CUDNN_STATUS_BAD_PARAM_DESCRIPTOR_TYPE",
    3000: "CUDNN_STATUS_NOT_SUPPORTED",
    3001: "CUDNN_STATUS_NOT_SUPPORTED_GRAPH_PATTERN",
    3002: "CUDNN_STATUS_NOT_SUPPORTED_SHAPE",
    3003: "CUDNN_STATUS_NOT_SUPPORTED_DATA_TYPE",
    3004: "CUDNN_STATUS_NOT_SUPPORTED_LAYOUT",
    3005: "CUDNN_STATUS_NOT_SUPPORTED_INCOMPATIBLE_CUDA_DRIVER",
    3006: "CUDNN_STATUS_NOT_SUPPORTED_INCOMPATIBLE_CUDART",
    3007: "CUDNN_STATUS_NOT_SUPPORTED_ARCH_MISMATCH",
    3008: "CUDNN_STATUS_NOT_SUPPORTED_RUNTIME_PREREQUISITE_MISSING",
    3009: "CUDNN_STATUS_NOT_SUPPORTED_SUBLIBRARY_UNAVAILABLE",
    3010: "CUDNN_STATUS_NOT_SUPPORTED_SHARED_MEMORY_INSUFFICIENT",
    3011: "CUDNN_STATUS_NOT_SUPPORTED_PADDING",
    3012: "CUDNN_STATUS_NOT_SUPPORTED_BAD_LAUNCH_PARAM",
    3013: "CUDNN_STATUS_NOT_SUPPORTED_CUDA_GRAPH_NATIVE_API",
    3014: "CUDNN_STATUS_NOT_SUPPORTED_INVALID_DYNAMIC_SHAPE",
    4000: "CUDNN_STATUS_INTERNAL_ERROR",
    4001: "CUDNN_STATUS_INTERNAL_ERROR_COMPILATION_FAILED",
    4002: "CUDNN_STATUS_INTERNAL_ERROR_UNEXPECTED_VALUE",
    4003: "CUDNN_STATUS_INTERNAL_ERROR_HOST_ALLOCATION_FAILED",
    4004: "CUDNN_STATUS_INTERNAL_ERROR_DEVICE_ALLOCATION_FAILED",
    4005: "CUDNN_STATUS_INTERNAL_ERROR_BAD_LAUNCH_PARAM",
    4006: "CUDNN_STATUS_INTERNAL_ERROR_TEXTURE_CREATION_FAILED",
    5000: "CUDNN_STATUS_EXECUTION_FAILED",
    5001: "CUDNN_STATUS_EXECUTION_FAILED_CUDA_DRIVER",
    5002: "CUDNN_STATUS_EXECUTION_FAILED_CUBLAS",
    5003: "CUDNN_STATUS_EXECUTION_FAILED_CUDART",
    5004: "CUDNN_STATUS_EXECUTION_FAILED_CURAND",
}

# cudnnDataType_t
DATA_FLOAT, DATA_DOUBLE, DATA_HALF = 0, 1, 2
# cudnnMathType_t
DEFAULT_MATH, TENSOR_OP_MATH, TENSOR_OP_MATH_ALLOW_CONVERSION, FMA_MATH = 0, 1, 2, 3
# cudnnRNNAlgo_t
RNN_ALGO_STANDARD = 0
# cudnnRNNMode_t
RNN_RELU, RNN_TANH, LSTM, GRU = 0, 1, 2, 3
# cudnnRNNBiasMode_t
RNN_NO_BIAS, RNN_SINGLE_INP_BIAS, RNN_DOUBLE_BIAS, RNN_SINGLE_REC_BIAS = 0, 1, 2, 3
# cudnnDirectionMode_t
UNIDIRECTIONAL, BIDIRECTIONAL = 0, 1
# cudnnRNNInputMode_t
LINEAR_INPUT, SKIP_INPUT = 0, 1
# cudnnForwardMode_t
FWD_MODE_INFERENCE, FWD_MODE_TRAINING = 0, 1
# cudnnRNNDataLayout_t
SEQ_MAJOR_UNPACKED, SEQ_MAJOR_PACKED, BATCH_MAJOR_UNPACKED = 0, 1, 2
# cudnnWgradMode_t
WGRAD_MODE_ADD, WGRAD_MODE_SET = 0, 1
# auxFlags
RNN_PADDED_IO_DISABLED, RNN_PADDED_IO_ENABLED = 0, 1

# LSTM linLayerID in cudnnGetRNNWeightParams: 0..3 act on x, 4..7 on h(t-1);
# within each group the gates are i, f, c (candidate, tanh), o -- Keras's column order.
LSTM_GATES = ("i", "f", "c", "o")
LSTM_INPUT_IDS = (0, 1, 2, 3)
LSTM_RECURRENT_IDS = (4, 5, 6, 7)

_s = c_int  # cudnnStatus_t
_p = c_void_p  # handles, descriptors, device pointers
_pi = POINTER(c_int)

# name -> (restype, argtypes). Enums are C ints; int32_t/uint32_t as spelled in the headers.
PROTOTYPES: dict[str, tuple] = {
    # cudnn_graph.h
    "cudnnGetVersion": (c_size_t, []),
    "cudnnGetCudartVersion": (c_size_t, []),
    "cudnnGetErrorString": (c_char_p, [c_int]),
    "cudnnGetLastErrorString": (None, [c_char_p, c_size_t]),
    "cudnnCreate": (_s, [POINTER(c_void_p)]),
    "cudnnDestroy": (_s, [_p]),
    "cudnnSetStream": (_s, [_p, _p]),
    "cudnnGetStream": (_s, [_p, POINTER(c_void_p)]),
    # cudnn_ops.h
    "cudnnCreateTensorDescriptor": (_s, [POINTER(c_void_p)]),
    "cudnnSetTensorNdDescriptor": (_s, [_p, c_int, c_int, _pi, _pi]),
    "cudnnGetTensorNdDescriptor": (_s, [_p, c_int, _pi, _pi, _pi, _pi]),
    "cudnnDestroyTensorDescriptor": (_s, [_p]),
    "cudnnCreateDropoutDescriptor": (_s, [POINTER(c_void_p)]),
    "cudnnDestroyDropoutDescriptor": (_s, [_p]),
    "cudnnDropoutGetStatesSize": (_s, [_p, POINTER(c_size_t)]),
    "cudnnSetDropoutDescriptor": (_s, [_p, _p, c_float, _p, c_size_t, c_ulonglong]),
    # cudnn_adv.h
    "cudnnCreateRNNDescriptor": (_s, [POINTER(c_void_p)]),
    "cudnnDestroyRNNDescriptor": (_s, [_p]),
    "cudnnSetRNNDescriptor_v8": (
        _s,
        [_p, c_int, c_int, c_int, c_int, c_int, c_int, c_int, c_int,
         c_int32, c_int32, c_int32, c_int32, _p, c_uint32],
    ),
    "cudnnGetRNNDescriptor_v8": (
        _s,
        [_p, _pi, _pi, _pi, _pi, _pi, _pi, _pi, _pi,
         POINTER(c_int32), POINTER(c_int32), POINTER(c_int32), POINTER(c_int32),
         POINTER(c_void_p), POINTER(c_uint32)],
    ),
    "cudnnRNNSetClip_v9": (_s, [_p, c_int, c_double, c_double]),
    "cudnnGetRNNWeightSpaceSize": (_s, [_p, _p, POINTER(c_size_t)]),
    "cudnnGetRNNWeightParams": (
        _s,
        [_p, _p, c_int32, c_size_t, _p, c_int32, _p, POINTER(c_void_p), _p, POINTER(c_void_p)],
    ),
    "cudnnGetRNNTempSpaceSizes": (
        _s, [_p, _p, c_int, _p, POINTER(c_size_t), POINTER(c_size_t)]
    ),
    "cudnnCreateRNNDataDescriptor": (_s, [POINTER(c_void_p)]),
    "cudnnDestroyRNNDataDescriptor": (_s, [_p]),
    "cudnnSetRNNDataDescriptor": (_s, [_p, c_int, c_int, c_int, c_int, c_int, _pi, _p]),
    "cudnnGetRNNDataDescriptor": (_s, [_p, _pi, _pi, _pi, _pi, _pi, c_int, _pi, _p]),
    "cudnnRNNForward": (
        _s,
        [_p, _p, c_int, _p,  # handle, rnnDesc, fwdMode, devSeqLengths
         _p, _p, _p, _p,  # xDesc, x, yDesc, y
         _p, _p, _p,  # hDesc, hx, hy
         _p, _p, _p,  # cDesc, cx, cy
         c_size_t, _p, c_size_t, _p, c_size_t, _p],  # weight, work, reserve (size, ptr)
    ),
    "cudnnRNNBackwardData_v8": (
        _s,
        [_p, _p, _p,  # handle, rnnDesc, devSeqLengths
         _p, _p, _p,  # yDesc, y, dy
         _p, _p,  # xDesc, dx
         _p, _p, _p, _p,  # hDesc, hx, dhy, dhx
         _p, _p, _p, _p,  # cDesc, cx, dcy, dcx
         c_size_t, _p, c_size_t, _p, c_size_t, _p],  # weight, work, reserve
    ),
    "cudnnRNNBackwardWeights_v8": (
        _s,
        [_p, _p, c_int, _p,  # handle, rnnDesc, addGrad, devSeqLengths
         _p, _p, _p, _p, _p, _p,  # xDesc, x, hDesc, hx, yDesc, y
         c_size_t, _p, c_size_t, _p, c_size_t, _p],  # dweight, work, reserve
    ),
}
