// lstm_host.cpp -- the per-element code of lstm_cell.cuh as a host shared library.
//
// Built by CMakeLists.txt (target lstm_cell_host) for the tests, which call it through ctypes
// and compare with the NumPy reference (lstm_gpu.activations) and run the kernel path's time
// loop on the CPU with it as the fused pointwise op. Each step function loops over the same
// element bodies that the CUDA kernels run in a grid-stride loop.
#include "lstm_cell.cuh"

using lstm::idx_t;

namespace {

template <typename T> void act_fn_n(int act, const T* x, T* y, idx_t n) {
    for (idx_t i = 0; i < n; ++i) y[i] = lstm::act_fn<T>(act, x[i]);
}

template <typename T> void act_grad_n(int act, const T* x, const T* y, T* dy, idx_t n) {
    for (idx_t i = 0; i < n; ++i) dy[i] = lstm::act_grad<T>(act, x[i], y[i]);
}

template <typename T, int A, int RA> void fwd_n(const lstm::FwdStep<T>& p) {
    const idx_t n = p.B * p.U;
    for (idx_t i = 0; i < n; ++i) lstm::fwd_step_element<T, A, RA>(p, i);
}

template <typename T, int A, int RA> void bwd_n(const lstm::BwdStep<T>& p) {
    const idx_t n = p.B * p.U;
    for (idx_t i = 0; i < n; ++i) lstm::bwd_step_element<T, A, RA>(p, i);
}

template <typename T>
void fwd(const T* xz, idx_t xz_gs, idx_t xz_bs, const T* rz, idx_t rz_gs, idx_t rz_bs,
         const T* bias, const T* h_prev, const T* c_prev, const T* out_prev,
         const unsigned char* mask, const T* rec_mask, T* h_rec, T* h, T* c, T* out, T* z_save,
         idx_t B, idx_t U, int act, int ract, int zero_output, int fixed) {
    lstm::FwdStep<T> p = {xz, xz_gs, xz_bs, rz, rz_gs, rz_bs, bias, h_prev, c_prev, out_prev,
                          mask, rec_mask, h_rec, h, c, out, z_save, B, U, act, ract,
                          zero_output};
    if (fixed && act == lstm::ACT_TANH && ract == lstm::ACT_SIGMOID)
        fwd_n<T, lstm::ACT_TANH, lstm::ACT_SIGMOID>(p);
    else
        fwd_n<T, lstm::ACT_DYNAMIC, lstm::ACT_DYNAMIC>(p);
}

template <typename T>
void bwd(const T* z, const T* c_prev, const T* c, const unsigned char* mask, const T* d_out,
         T* g_out, T* dh, const T* dh_rec, const T* rec_mask, T* dc, T* dz, idx_t dz_gs,
         idx_t dz_bs, idx_t B, idx_t U, int act, int ract, int zero_output, int fixed) {
    lstm::BwdStep<T> p = {z, c_prev, c, mask, d_out, g_out, dh, dh_rec, rec_mask, dc, dz,
                          dz_gs, dz_bs, B, U, act, ract, zero_output};
    if (fixed && act == lstm::ACT_TANH && ract == lstm::ACT_SIGMOID)
        bwd_n<T, lstm::ACT_TANH, lstm::ACT_SIGMOID>(p);
    else
        bwd_n<T, lstm::ACT_DYNAMIC, lstm::ACT_DYNAMIC>(p);
}

template <typename T>
void colsum(const T* in, idx_t ts, idx_t bs, idx_t gs, idx_t T_, idx_t B, idx_t U,
            idx_t rows_per_chunk, idx_t chunks, T* partial, T* out) {
    lstm::ColSum<T> p = {in, ts, bs, gs, T_, B, U, rows_per_chunk, chunks, partial, out};
    for (idx_t i = 0; i < chunks * 4 * U; ++i) lstm::colsum_partial_element<T>(p, i);
    for (idx_t j = 0; j < 4 * U; ++j) lstm::colsum_final_element<T>(p, j);
}

}  // namespace

#define LSTM_HOST_API(SUFFIX, T)                                                             \
    extern "C" void lstm_act_fn_##SUFFIX(int act, const T* x, T* y, idx_t n) {              \
        act_fn_n<T>(act, x, y, n);                                                           \
    }                                                                                        \
    extern "C" void lstm_act_grad_##SUFFIX(int act, const T* x, const T* y, T* dy, idx_t n) { \
        act_grad_n<T>(act, x, y, dy, n);                                                     \
    }                                                                                        \
    extern "C" void lstm_fwd_step_##SUFFIX(const T* xz, idx_t xz_gs, idx_t xz_bs, const T* rz, \
        idx_t rz_gs, idx_t rz_bs, const T* bias, const T* h_prev, const T* c_prev,           \
        const T* out_prev, const unsigned char* mask, const T* rec_mask, T* h_rec, T* h,     \
        T* c, T* out, T* z_save, idx_t B, idx_t U, int act, int ract, int zero_output,       \
        int fixed) {                                                                         \
        fwd<T>(xz, xz_gs, xz_bs, rz, rz_gs, rz_bs, bias, h_prev, c_prev, out_prev, mask,      \
               rec_mask, h_rec, h, c, out, z_save, B, U, act, ract, zero_output, fixed);     \
    }                                                                                        \
    extern "C" void lstm_bwd_step_##SUFFIX(const T* z, const T* c_prev, const T* c,           \
        const unsigned char* mask, const T* d_out, T* g_out, T* dh, const T* dh_rec,         \
        const T* rec_mask, T* dc, T* dz, idx_t dz_gs, idx_t dz_bs, idx_t B, idx_t U,         \
        int act, int ract, int zero_output, int fixed) {                                     \
        bwd<T>(z, c_prev, c, mask, d_out, g_out, dh, dh_rec, rec_mask, dc, dz, dz_gs, dz_bs,  \
               B, U, act, ract, zero_output, fixed);                                         \
    }                                                                                        \
    extern "C" void lstm_colsum_##SUFFIX(const T* in, idx_t ts, idx_t bs, idx_t gs, idx_t T_, \
        idx_t B, idx_t U, idx_t rows_per_chunk, idx_t chunks, T* partial, T* out) {          \
        colsum<T>(in, ts, bs, gs, T_, B, U, rows_per_chunk, chunks, partial, out);           \
    }

LSTM_HOST_API(f32, float)
LSTM_HOST_API(f64, double)

extern "C" int lstm_act_count(void) { return lstm::ACT_COUNT; }
