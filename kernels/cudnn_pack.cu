// cudnn_pack.cu -- Keras LSTM weights -> cuDNN's canonical weight space, in one launch.
//
// The cuDNN path repacks the live Keras arrays on every call (so an in-place edit of a weight
// always reaches cuDNN); this kernel makes that one launch instead of four copies and a memset.
// Compiled by NVRTC at run time (lstm_gpu/paths/cudnn_weights.py) and by nvcc in the tests;
// the element function is plain C++ on the host, where the tests run it through ctypes.
//
// Canonical layout (1 unidirectional LSTM layer, CUDNN_RNN_DOUBLE_BIAS; F features, U units,
// Keras gate blocks i, f, c, o = cuDNN linLayerIDs 0..3 on x and 4..7 on h):
//
//   [0, 4UF)              W0..W3 as one row-major (4U, F) matrix   = kernel (F, 4U) transposed
//   [4UF, 4UF + 4UU)      R4..R7 as one row-major (4U, U) matrix   = recurrent_kernel^T
//   next 4U               bW0..bW3                                 = 0 (input bias unused)
//   next 4U               bR4..bR7                                 = bias (4U,)
//
// The kernel only moves bits, so it is instantiated on unsigned integers of the element width
// (2, 4, 8 bytes: float16, float32, float64); integer zero is +0.0 in every IEEE format.
#if defined(__CUDACC_RTC__) || defined(__CUDACC__)
#define CUDNN_PACK_HD __host__ __device__ __forceinline__
#else
#define CUDNN_PACK_HD inline
#endif

namespace lstm_cudnn {

typedef long long idx_t;

// Number of elements of the canonical weight space.
CUDNN_PACK_HD idx_t packed_size(idx_t features, idx_t units) {
    return 4 * units * (features + units) + 8 * units;
}

// Element i of the canonical weight space, read from the row-major Keras arrays.
template <typename T>
CUDNN_PACK_HD T packed_element(const T* kernel, const T* recurrent, const T* bias,
                               idx_t features, idx_t units, idx_t i) {
    const idx_t u4 = 4 * units;
    const idx_t n_w = u4 * features;
    if (i < n_w) {
        const idx_t row = i / features;  // gate unit, 0..4U-1
        return kernel[(i - row * features) * u4 + row];
    }
    i -= n_w;
    const idx_t n_r = u4 * units;
    if (i < n_r) {
        const idx_t row = i / units;
        return recurrent[(i - row * units) * u4 + row];
    }
    i -= n_r;
    if (i < u4) return T(0);
    return bias[i - u4];
}

#if defined(__CUDACC_RTC__) || defined(__CUDACC__)
// Grid-stride loop over the whole weight space: coalesced writes, strided reads of the
// transposed matrices (the weights are read once per call; a tiled transpose is not worth it).
template <typename T>
__global__ void pack_canonical(const T* __restrict__ kernel, const T* __restrict__ recurrent,
                               const T* __restrict__ bias, T* __restrict__ out,
                               idx_t features, idx_t units) {
    const idx_t n = packed_size(features, units);
    const idx_t stride = (idx_t)blockDim.x * gridDim.x;
    for (idx_t i = (idx_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
        out[i] = packed_element<T>(kernel, recurrent, bias, features, units, i);
}
#endif

}  // namespace lstm_cudnn

#if defined(LSTM_GPU_INSTANTIATE) && defined(__CUDACC__)
template __global__ void lstm_cudnn::pack_canonical<unsigned short>(
    const unsigned short*, const unsigned short*, const unsigned short*, unsigned short*,
    lstm_cudnn::idx_t, lstm_cudnn::idx_t);
template __global__ void lstm_cudnn::pack_canonical<unsigned int>(
    const unsigned int*, const unsigned int*, const unsigned int*, unsigned int*,
    lstm_cudnn::idx_t, lstm_cudnn::idx_t);
template __global__ void lstm_cudnn::pack_canonical<unsigned long long>(
    const unsigned long long*, const unsigned long long*, const unsigned long long*,
    unsigned long long*, lstm_cudnn::idx_t, lstm_cudnn::idx_t);
#endif
