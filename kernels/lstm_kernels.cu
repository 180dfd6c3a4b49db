// lstm_kernels.cu -- thin __global__ wrappers over kernels/lstm_cell.cuh.
//
// Compiled by NVRTC at run time (lstm_gpu/cuda/kernels.py pastes the header in place of the
// #include line, so no include path is needed) and by nvcc from CMakeLists.txt, which defines
// LSTM_GPU_INSTANTIATE to emit the same instantiations that Python lists in NAME_EXPRESSIONS.
//
// Every kernel is a grid-stride loop over independent elements; the per-element body lives in
// the header so the host library (kernels/lstm_host.cpp) runs the very same code on the CPU.
//
// Templates: T in {float, double}; A, RA = activation / recurrent activation as a
// compile-time `enum Act` value, or ACT_DYNAMIC (-1) to take the runtime arguments
// `act`, `ract`. (1, 2) = (tanh, sigmoid) is instantiated as the fast common case.
#include "lstm_cell.cuh"

namespace lstm {

template <typename T, int A, int RA>
__global__ void fwd_step(const T* xz, idx_t xz_gs, idx_t xz_bs, const T* rz, idx_t rz_gs,
                         idx_t rz_bs, const T* bias, const T* h_prev, const T* c_prev,
                         const T* out_prev, const unsigned char* mask, const T* rec_mask,
                         T* h_rec, T* h, T* c, T* out, T* z_save, idx_t B, idx_t U, int act,
                         int ract, int zero_output) {
    FwdStep<T> p;
    p.xz = xz; p.xz_gs = xz_gs; p.xz_bs = xz_bs;
    p.rz = rz; p.rz_gs = rz_gs; p.rz_bs = rz_bs;
    p.bias = bias; p.h_prev = h_prev; p.c_prev = c_prev; p.out_prev = out_prev;
    p.mask = mask; p.rec_mask = rec_mask; p.h_rec = h_rec;
    p.h = h; p.c = c; p.out = out; p.z_save = z_save;
    p.B = B; p.U = U; p.act = act; p.ract = ract; p.zero_output = zero_output;
    const idx_t n = B * U;
    const idx_t stride = (idx_t)blockDim.x * gridDim.x;
    for (idx_t i = (idx_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
        fwd_step_element<T, A, RA>(p, i);
}

template <typename T, int A, int RA>
__global__ void bwd_step(const T* z, const T* c_prev, const T* c, const unsigned char* mask,
                         const T* d_out, T* g_out, T* dh, const T* dh_rec, const T* rec_mask,
                         T* dc, T* dz, idx_t dz_gs, idx_t dz_bs, idx_t B, idx_t U, int act,
                         int ract, int zero_output) {
    BwdStep<T> p;
    p.z = z; p.c_prev = c_prev; p.c = c; p.mask = mask; p.d_out = d_out;
    p.g_out = g_out; p.dh = dh; p.dh_rec = dh_rec; p.rec_mask = rec_mask;
    p.dc = dc; p.dz = dz; p.dz_gs = dz_gs; p.dz_bs = dz_bs;
    p.B = B; p.U = U; p.act = act; p.ract = ract; p.zero_output = zero_output;
    const idx_t n = B * U;
    const idx_t stride = (idx_t)blockDim.x * gridDim.x;
    for (idx_t i = (idx_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
        bwd_step_element<T, A, RA>(p, i);
}

// Bias gradient, pass 1: one thread per (chunk, column); consecutive threads take
// consecutive columns, so each row read is coalesced.
//
//        columns j = 0 .. 4U-1  ->
//   rows  +-----------------------+
//   chunk0| thread (0, j) sums     |
//   chunk1| rows of its chunk ...  |  -> partial (chunks, 4U)
//         +-----------------------+
//
// Row r = t * B + b of column j = k * U + u is in[t*ts + b*bs + k*gs + u]; the per-element
// sum is lstm_cell.cuh's colsum_partial_element, the host library's too, so both give the
// same bits.
template <typename T>
__global__ void colsum_partial(const T* in, idx_t ts, idx_t bs, idx_t gs, idx_t T_, idx_t B,
                               idx_t U, idx_t rows_per_chunk, idx_t chunks, T* partial) {
    ColSum<T> p;
    p.in = in; p.ts = ts; p.bs = bs; p.gs = gs; p.T_ = T_; p.B = B; p.U = U;
    p.rows_per_chunk = rows_per_chunk; p.chunks = chunks; p.partial = partial; p.out = nullptr;
    const idx_t n = chunks * 4 * U;
    const idx_t stride = (idx_t)blockDim.x * gridDim.x;
    for (idx_t i = (idx_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
        colsum_partial_element<T>(p, i);
}

// Pass 2: out[j] = sum over chunks, in chunk order (deterministic).
template <typename T>
__global__ void colsum_final(const T* partial, idx_t U, idx_t chunks, T* out) {
    ColSum<T> p;
    p.in = nullptr; p.ts = p.bs = p.gs = 0; p.T_ = 0; p.B = 0; p.U = U;
    p.rows_per_chunk = 0; p.chunks = chunks; p.partial = const_cast<T*>(partial); p.out = out;
    const idx_t n = 4 * U;
    const idx_t stride = (idx_t)blockDim.x * gridDim.x;
    for (idx_t i = (idx_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
        colsum_final_element<T>(p, i);
}

#ifdef LSTM_GPU_INSTANTIATE
// Keep in step with NAME_EXPRESSIONS in lstm_gpu/cuda/kernels.py (a test compares them).
#define LSTM_INST_STEP(T, A, RA)                                                            \
    template __global__ void fwd_step<T, A, RA>(const T*, idx_t, idx_t, const T*, idx_t,     \
        idx_t, const T*, const T*, const T*, const T*, const unsigned char*, const T*, T*,   \
        T*, T*, T*, T*, idx_t, idx_t, int, int, int);                                        \
    template __global__ void bwd_step<T, A, RA>(const T*, const T*, const T*,                \
        const unsigned char*, const T*, T*, T*, const T*, const T*, T*, T*, idx_t, idx_t,    \
        idx_t, idx_t, int, int, int);
#define LSTM_INST_SUM(T)                                                                    \
    template __global__ void colsum_partial<T>(const T*, idx_t, idx_t, idx_t, idx_t, idx_t,  \
        idx_t, idx_t, idx_t, T*);                                                            \
    template __global__ void colsum_final<T>(const T*, idx_t, idx_t, T*);
LSTM_INST_STEP(float, -1, -1)
LSTM_INST_STEP(float, 1, 2)
LSTM_INST_STEP(double, -1, -1)
LSTM_INST_STEP(double, 1, 2)
LSTM_INST_SUM(float)
LSTM_INST_SUM(double)
#endif

}  // namespace lstm
