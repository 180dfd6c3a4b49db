// lstm_cell.cuh -- per-element LSTM math shared by the CUDA kernels and the host library.
//
// Everything here is a __host__ __device__ function (the macros are empty on a plain C++
// compiler), so the same code is compiled by NVRTC (lstm_gpu.cuda.kernels), by nvcc
// (CMakeLists.txt) and by g++ into a host shared library that the tests call through ctypes
// (kernels/lstm_host.cpp). No header is included under NVRTC or nvcc: the CUDA math
// functions are builtins there. On the host, <math.h> provides the same names.
//
// Notation (one step, one sample b, one unit u; U units, B samples):
//
//   z_k = xz[b, k, u] + rz[b, k, u] + bias[k*U + u]         k = i, f, c, o (gate blocks)
//   i = sigma(z_i)  f = sigma(z_f)  g = phi(z_c)  o = sigma(z_o)
//   c_new = f * c_prev + i * g        h_new = o * phi(c_new)
//   mask m:  h = m ? h_new : h_prev   c = m ? c_new : c_prev
//            out = m ? h_new : (zero_output ? 0 : out_prev)      (out_prev = 0 before step 0)
//
// sigma = recurrent_activation, phi = activation; both are `enum Act` values whose integer
// ids are `lstm_gpu.activations.KERNEL_IDS` (a test parses this enum and compares).
//
// Strided operands: element (b, k, u) of a "gate-strided" operand lives at
//   b * batch_stride + k * gate_stride + u
// which covers the fused layout (B, 4U) [gate_stride U, batch_stride 4U] and the per-gate
// layout (4, B, U) [gate_stride B*U, batch_stride U] used by implementation 1 with dropout.
#pragma once

#if defined(__CUDACC_RTC__) || defined(__CUDACC__)
#define LSTM_HD __host__ __device__ __forceinline__
#define LSTM_EXPF expf
#define LSTM_TANHF tanhf
#else
#include <math.h>
#define LSTM_HD inline
// A host build may name branch-free float exp/tanh that its compiler can vectorise (the CPU
// core does: kernels/cpu/vmath.h); by default the host uses <math.h>, like the tests' library.
#ifndef LSTM_EXPF
#define LSTM_EXPF expf
#endif
#ifndef LSTM_TANHF
#define LSTM_TANHF tanhf
#endif
#endif

namespace lstm {

typedef long long idx_t;

// Keep in step with lstm_gpu/activations.py (_BUILTINS / KERNEL_IDS).
enum Act {
    ACT_LINEAR = 0,
    ACT_TANH = 1,
    ACT_SIGMOID = 2,
    ACT_HARD_SIGMOID = 3,
    ACT_HARD_SIGMOID_KERAS2 = 4,
    ACT_RELU = 5,
    ACT_RELU6 = 6,
    ACT_LEAKY_RELU = 7,
    ACT_ELU = 8,
    ACT_SELU = 9,
    ACT_CELU = 10,
    ACT_SOFTPLUS = 11,
    ACT_SOFTSIGN = 12,
    ACT_SQUAREPLUS = 13,
    ACT_SOFT_SHRINK = 14,
    ACT_HARD_SHRINK = 15,
    ACT_SPARSE_PLUS = 16,
    ACT_SPARSE_SIGMOID = 17,
    ACT_SILU = 18,
    ACT_GELU = 19,
    ACT_TANH_SHRINK = 20,
    ACT_EXPONENTIAL = 21,
    ACT_HARD_SILU = 22,
    ACT_HARD_TANH = 23,
    ACT_MISH = 24,
    ACT_LOG_SIGMOID = 25,
    ACT_COUNT = 26,
    ACT_DYNAMIC = -1  // template argument: the activation id is a runtime argument
};

// ---------------------------------------------------------------------------------------
// Math in the storage precision: float math for float, double math for double.
// ---------------------------------------------------------------------------------------
template <typename T> struct M;

template <> struct M<float> {
    static LSTM_HD float exp(float x) { return LSTM_EXPF(x); }
    static LSTM_HD float expm1(float x) { return expm1f(x); }
    static LSTM_HD float log1p(float x) { return log1pf(x); }
    static LSTM_HD float tanh(float x) { return LSTM_TANHF(x); }
    static LSTM_HD float sqrt(float x) { return sqrtf(x); }
    static LSTM_HD float erf(float x) { return erff(x); }
    static LSTM_HD float abs(float x) { return fabsf(x); }
};

template <> struct M<double> {
    static LSTM_HD double exp(double x) { return ::exp(x); }
    static LSTM_HD double expm1(double x) { return ::expm1(x); }
    static LSTM_HD double log1p(double x) { return ::log1p(x); }
    static LSTM_HD double tanh(double x) { return ::tanh(x); }
    static LSTM_HD double sqrt(double x) { return ::sqrt(x); }
    static LSTM_HD double erf(double x) { return ::erf(x); }
    static LSTM_HD double abs(double x) { return ::fabs(x); }
};

// Constants of lstm_gpu/activations.py.
#define LSTM_SELU_ALPHA 1.6732632423543772848170429916717
#define LSTM_SELU_SCALE 1.0507009873554804934193349852946
#define LSTM_LEAKY_SLOPE 0.2
#define LSTM_SHRINK 0.5
#define LSTM_SQUAREPLUS_B 4.0
#define LSTM_CELU_ALPHA 1.0
#define LSTM_ELU_ALPHA 1.0
#define LSTM_SQRT2 1.4142135623730951
#define LSTM_SQRT_2PI 2.5066282746310002

template <typename T> LSTM_HD T clip(T x, T lo, T hi) { return x < lo ? lo : (x > hi ? hi : x); }

// 1 inside the open interval (lo, hi), else 0, times `value`.
template <typename T> LSTM_HD T inside(T x, T lo, T hi, T value) {
    return (x > lo && x < hi) ? value : T(0);
}

template <typename T> LSTM_HD T sigmoid(T x) { return T(1) / (T(1) + M<T>::exp(-x)); }

// numpy.logaddexp(x, 0)
template <typename T> LSTM_HD T softplus(T x) {
    return x > T(0) ? x + M<T>::log1p(M<T>::exp(-x)) : M<T>::log1p(M<T>::exp(x));
}

template <typename T> LSTM_HD T hard_sigmoid(T x) {
    return clip(x / T(6) + T(0.5), T(0), T(1));
}

// y = act(x). Formulas mirror lstm_gpu/activations.py term by term. NaN in, NaN out, for
// every activation (as Keras's): a comparison with NaN is false, so without this test the
// piecewise ones (relu, the shrinks, celu) would return a number. tanh and sigmoid give NaN
// for NaN by themselves and skip the test: as a branch around the whole formula it turns
// their vectorised CPU loops into masked code (twice the divisions).
template <typename T> LSTM_HD T act_fn(int act, T x) {
    if (act == ACT_TANH) return M<T>::tanh(x);
    if (act == ACT_SIGMOID) return sigmoid(x);
    if (x != x) return x;
    switch (act) {
    case ACT_LINEAR: return x;
    case ACT_TANH: return M<T>::tanh(x);
    case ACT_SIGMOID: return sigmoid(x);
    case ACT_HARD_SIGMOID: return hard_sigmoid(x);
    case ACT_HARD_SIGMOID_KERAS2: return clip(T(0.2) * x + T(0.5), T(0), T(1));
    case ACT_RELU: return x > T(0) ? x : T(0);
    case ACT_RELU6: return clip(x, T(0), T(6));
    case ACT_LEAKY_RELU: {
        T s = T(LSTM_LEAKY_SLOPE) * x;
        return x > s ? x : s;
    }
    case ACT_ELU: return x >= T(0) ? x : T(LSTM_ELU_ALPHA) * M<T>::expm1(x);
    case ACT_SELU:
        return T(LSTM_SELU_SCALE) * (x >= T(0) ? x : T(LSTM_SELU_ALPHA) * M<T>::expm1(x));
    case ACT_CELU: {
        T a = T(LSTM_CELU_ALPHA);
        T neg = x < T(0) ? x : T(0);
        return (x > T(0) ? x : T(0)) + a * M<T>::expm1(neg / a);
    }
    case ACT_SOFTPLUS: return softplus(x);
    case ACT_SOFTSIGN: return x / (T(1) + M<T>::abs(x));
    case ACT_SQUAREPLUS: return (x + M<T>::sqrt(x * x + T(LSTM_SQUAREPLUS_B))) / T(2);
    case ACT_SOFT_SHRINK: {
        T t = T(LSTM_SHRINK);
        return x > t ? x - t : (x < -t ? x + t : T(0));
    }
    case ACT_HARD_SHRINK: return M<T>::abs(x) > T(LSTM_SHRINK) ? x : T(0);
    case ACT_SPARSE_PLUS: {
        T p = x + T(1);
        return x <= T(-1) ? T(0) : (x < T(1) ? p * p / T(4) : x);
    }
    case ACT_SPARSE_SIGMOID: return clip((x + T(1)) / T(2), T(0), T(1));
    case ACT_SILU: return x * sigmoid(x);
    case ACT_GELU: return x * (M<T>::erf(x / T(LSTM_SQRT2)) + T(1)) / T(2);
    case ACT_TANH_SHRINK: return x - M<T>::tanh(x);
    case ACT_EXPONENTIAL: return M<T>::exp(x);
    case ACT_HARD_SILU: return x * hard_sigmoid(x);
    case ACT_HARD_TANH: return clip(x, T(-1), T(1));
    case ACT_MISH: return x * M<T>::tanh(softplus(x));
    case ACT_LOG_SIGMOID: return -softplus(-x);
    default: return x;  // unreachable: ids are validated in Python
    }
}

// dy/dx given x and y = act(x) (as lstm_gpu.activations' grad(x, y)); NaN at NaN, for every
// activation, so no gradient through a NaN pre-activation is finite (tanh's and sigmoid's
// through y, which is NaN there).
template <typename T> LSTM_HD T act_grad(int act, T x, T y) {
    if (act == ACT_TANH) return T(1) - y * y;
    if (act == ACT_SIGMOID) return y * (T(1) - y);
    if (x != x) return x;
    switch (act) {
    case ACT_LINEAR: return T(1);
    case ACT_TANH: return T(1) - y * y;
    case ACT_SIGMOID: return y * (T(1) - y);
    case ACT_HARD_SIGMOID: return inside(x, T(-3), T(3), T(1.0 / 6.0));
    case ACT_HARD_SIGMOID_KERAS2: return inside(x, T(-2.5), T(2.5), T(0.2));
    case ACT_RELU: return x > T(0) ? T(1) : T(0);
    case ACT_RELU6: return inside(x, T(0), T(6), T(1));
    case ACT_LEAKY_RELU: return x > T(0) ? T(1) : T(LSTM_LEAKY_SLOPE);
    case ACT_ELU: return x >= T(0) ? T(1) : y + T(LSTM_ELU_ALPHA);
    case ACT_SELU: {
        T neg = T(LSTM_SELU_SCALE * LSTM_SELU_ALPHA) * M<T>::exp(x < T(0) ? x : T(0));
        return x >= T(0) ? T(LSTM_SELU_SCALE) : neg;
    }
    case ACT_CELU:
        return x > T(0) ? T(1) : M<T>::exp((x < T(0) ? x : T(0)) / T(LSTM_CELU_ALPHA));
    case ACT_SOFTPLUS: return sigmoid(x);
    case ACT_SOFTSIGN: {
        T d = T(1) + M<T>::abs(x);
        return T(1) / (d * d);
    }
    case ACT_SQUAREPLUS:
        return (T(1) + x / M<T>::sqrt(x * x + T(LSTM_SQUAREPLUS_B))) / T(2);
    case ACT_SOFT_SHRINK:
    case ACT_HARD_SHRINK: return M<T>::abs(x) > T(LSTM_SHRINK) ? T(1) : T(0);
    case ACT_SPARSE_PLUS:
        return x <= T(-1) ? T(0) : (x < T(1) ? (x + T(1)) / T(2) : T(1));
    case ACT_SPARSE_SIGMOID: return inside(x, T(-1), T(1), T(0.5));
    case ACT_SILU: {
        T s = sigmoid(x);
        return s + x * s * (T(1) - s);
    }
    case ACT_GELU: {
        T cdf = (M<T>::erf(x / T(LSTM_SQRT2)) + T(1)) / T(2);
        T pdf = M<T>::exp(-x * x / T(2)) / T(LSTM_SQRT_2PI);
        return cdf + x * pdf;
    }
    case ACT_TANH_SHRINK: {
        T t = M<T>::tanh(x);
        return t * t;
    }
    case ACT_EXPONENTIAL: return y;
    case ACT_HARD_SILU:
        return x <= T(-3) ? T(0) : (x >= T(3) ? T(1) : x / T(3) + T(0.5));
    case ACT_HARD_TANH: return inside(x, T(-1), T(1), T(1));
    case ACT_MISH: {
        T t = M<T>::tanh(softplus(x));
        return t + x * (T(1) - t * t) * sigmoid(x);
    }
    case ACT_LOG_SIGMOID: return sigmoid(-x);
    default: return T(1);
    }
}

// A compile-time activation when A >= 0 (the switch folds away), else the runtime id.
template <int A> LSTM_HD int pick_act(int runtime_id) { return A >= 0 ? A : runtime_id; }

// ---------------------------------------------------------------------------------------
// The cell on one (b, u): gates from pre-activations, then the state update.
// ---------------------------------------------------------------------------------------
template <typename T> struct Gates {
    T i, f, g, o;
};

template <typename T>
LSTM_HD Gates<T> gates_forward(int act, int ract, T zi, T zf, T zc, T zo) {
    Gates<T> r;
    r.i = act_fn<T>(ract, zi);
    r.f = act_fn<T>(ract, zf);
    r.g = act_fn<T>(act, zc);
    r.o = act_fn<T>(ract, zo);
    return r;
}

template <typename T> LSTM_HD T cell_c(const Gates<T>& q, T c_prev) {
    return q.f * c_prev + q.i * q.g;
}

// What backward recomputes of one step's forward: the gates and phi(c_new).
template <typename T> struct CellActs {
    Gates<T> q;
    T tc;
};

template <typename T>
LSTM_HD CellActs<T> cell_acts(int act, int ract, T zi, T zf, T zc, T zo, T c_new) {
    CellActs<T> a;
    a.q = gates_forward<T>(act, ract, zi, zf, zc, zo);
    a.tc = act_fn<T>(act, c_new);
    return a;
}

// Backward of one valid step, given its recomputed activations a. dh, dc: gradients w.r.t.
// h_new and c_new (dc already holds the carried state gradient). Writes dz_i..dz_o and
// returns the gradient w.r.t. c_prev.
template <typename T>
LSTM_HD T cell_backward(int act, int ract, const CellActs<T>& a, T zi, T zf, T zc, T zo,
                        T c_prev, T c_new, T dh, T dc, T* dzi, T* dzf, T* dzc, T* dzo) {
    const Gates<T>& q = a.q;
    const T tc = a.tc;
    T dct = dc + dh * q.o * act_grad<T>(act, c_new, tc);
    *dzi = dct * q.g * act_grad<T>(ract, zi, q.i);
    *dzf = dct * c_prev * act_grad<T>(ract, zf, q.f);
    *dzc = dct * q.i * act_grad<T>(act, zc, q.g);
    *dzo = dh * tc * act_grad<T>(ract, zo, q.o);
    return dct * q.f;
}

// The output rule of a masked step.
template <typename T> LSTM_HD T masked_output(int zero_output, const T* out_prev, idx_t k) {
    return (zero_output || out_prev == nullptr) ? T(0) : out_prev[k];
}

// ---------------------------------------------------------------------------------------
// One element's whole step from loaded operands to the values it stores: the layout-free
// core of fwd_step_element / bwd_step_element below, shared with the CPU time loop
// (kernels/cpu/lstm_cpu_loops.hpp), which keeps its operands in its own layout.
// ---------------------------------------------------------------------------------------
template <typename T> struct CellState {
    T h, c, out;
};

// The state after a step from the output gate o, c_new = cell_c(q, c_prev) and
// tc = phi(c_new): the cell update where the step is valid, the mask rule where it is not;
// out_masked is what a masked step outputs (masked_output).
template <typename T>
LSTM_HD CellState<T> cell_state(T o, T c_new, T tc, T h_prev, T c_prev, bool valid,
                                T out_masked) {
    const T h_new = o * tc;
    CellState<T> r;
    r.h = valid ? h_new : h_prev;
    r.c = valid ? c_new : c_prev;
    r.out = valid ? h_new : out_masked;
    return r;
}

template <typename T>
LSTM_HD CellState<T> cell_step(int act, int ract, T zi, T zf, T zc, T zo, T h_prev, T c_prev,
                               bool valid, T out_masked) {
    const Gates<T> q = gates_forward<T>(act, ract, zi, zf, zc, zo);
    const T c_new = cell_c(q, c_prev);
    return cell_state<T>(q.o, c_new, act_fn<T>(act, c_new), h_prev, c_prev, valid, out_masked);
}

template <typename T> struct CellGrad {
    T dzi, dzf, dzc, dzo;  // gradient w.r.t. the pre-activations
    T dh, dc, g_out;       // carried to the previous step (see the backward step below)
};

// The gradient reaching an h state: dh carried from later steps plus the recurrent GEMM's
// dz @ U^T, which is per gate (4, n) and scaled by the recurrent dropout masks when rec_mask
// is given, else one (n) array.
template <typename T>
LSTM_HD T h_state_grad(T dh, const T* dh_rec, const T* rec_mask, idx_t n, idx_t idx) {
    if (rec_mask == nullptr) return dh + dh_rec[idx];
    for (int k = 0; k < 4; ++k) dh += dh_rec[k * n + idx] * rec_mask[k * n + idx];
    return dh;
}

// go: gradient reaching this step's output; dhs: reaching its h state; dc: its c state;
// a: the step's activations (cell_acts), read only where valid.
template <typename T>
LSTM_HD CellGrad<T> cell_grad(int act, int ract, const CellActs<T>& a, T zi, T zf, T zc, T zo,
                              T c_prev, T c, bool valid, T go, T dhs, T dc, int zero_output) {
    CellGrad<T> r;
    if (valid) {
        r.dc = cell_backward<T>(act, ract, a, zi, zf, zc, zo, c_prev, c, dhs + go, dc, &r.dzi,
                                &r.dzf, &r.dzc, &r.dzo);
        r.dh = T(0);
        r.g_out = T(0);
    } else {
        r.dzi = r.dzf = r.dzc = r.dzo = T(0);
        r.dh = dhs;
        r.dc = dc;
        r.g_out = zero_output ? T(0) : go;
    }
    return r;
}

template <typename T>
LSTM_HD CellGrad<T> cell_step_backward(int act, int ract, T zi, T zf, T zc, T zo, T c_prev,
                                       T c, bool valid, T go, T dhs, T dc, int zero_output) {
    const CellActs<T> a = valid ? cell_acts<T>(act, ract, zi, zf, zc, zo, c) : CellActs<T>{};
    return cell_grad<T>(act, ract, a, zi, zf, zc, zo, c_prev, c, valid, go, dhs, dc,
                        zero_output);
}

// ---------------------------------------------------------------------------------------
// One forward time step, element idx in [0, B*U).
// ---------------------------------------------------------------------------------------
template <typename T> struct FwdStep {
    const T* xz;  idx_t xz_gs, xz_bs;  // input projection (no bias), gate-strided
    const T* rz;  idx_t rz_gs, rz_bs;  // recurrent projection, gate-strided; may be null
    const T* bias;                      // (4U) or null
    const T* h_prev;                    // (B, U)
    const T* c_prev;                    // (B, U)
    const T* out_prev;                  // (B, U) or null (= zeros, step 0)
    const unsigned char* mask;          // (B) or null (every sample valid)
    const T* rec_mask;                  // (4, B, U) recurrent dropout, or null
    T* h_rec;                           // (4, B, U): h * rec_mask for the next GEMM, or null
    T* h;                               // (B, U) new state (may alias h_prev)
    T* c;                               // (B, U) new state (may alias c_prev)
    T* out;                             // (B, U) this step's output
    T* z_save;                          // (B, 4U) pre-activations for backward, or null
    idx_t B, U;
    int act, ract, zero_output;
};

template <typename T, int A, int RA> LSTM_HD void fwd_step_element(const FwdStep<T>& p, idx_t idx) {
    const int act = pick_act<A>(p.act);
    const int ract = pick_act<RA>(p.ract);
    const idx_t U = p.U;
    const idx_t b = idx / U;
    const idx_t u = idx - b * U;
    T z[4];
    for (int k = 0; k < 4; ++k) {
        T v = p.xz[b * p.xz_bs + k * p.xz_gs + u];
        if (p.rz != nullptr) v += p.rz[b * p.rz_bs + k * p.rz_gs + u];
        if (p.bias != nullptr) v += p.bias[k * U + u];
        z[k] = v;
        if (p.z_save != nullptr) p.z_save[b * 4 * U + k * U + u] = v;
    }
    const bool valid = p.mask == nullptr || p.mask[b] != 0;
    const CellState<T> s = cell_step<T>(act, ract, z[0], z[1], z[2], z[3], p.h_prev[idx],
                                        p.c_prev[idx], valid,
                                        masked_output(p.zero_output, p.out_prev, idx));
    p.c[idx] = s.c;
    p.h[idx] = s.h;
    p.out[idx] = s.out;
    if (p.h_rec != nullptr) {
        const idx_t n = p.B * U;
        for (int k = 0; k < 4; ++k) p.h_rec[k * n + idx] = s.h * p.rec_mask[k * n + idx];
    }
}

// ---------------------------------------------------------------------------------------
// One backward time step (processing order reversed), element idx in [0, B*U).
//
//   go   = g_out + d_out                          gradient reaching this step's output
//   dhs  = dh + sum_k dh_rec[k] * rec_mask[k]     gradient reaching the h state (rec_mask
//                                                 absent: dh + dh_rec[0])
//   valid:  dz from the cell with dh_new = dhs + go, dc_new = dc
//           dc <- dc_new-part through f; dh <- 0; g_out <- 0 (the GEMM dz @ U^T adds the rest)
//   masked: dz = 0; dh <- dhs; dc unchanged; g_out <- zero_output ? 0 : go
// ---------------------------------------------------------------------------------------
template <typename T> struct BwdStep {
    const T* z;                     // (B, 4U) saved pre-activations of this step
    const T* c_prev;                // (B, U) state before this step
    const T* c;                     // (B, U) state after this step (= c_new where valid)
    const unsigned char* mask;      // (B) or null
    const T* d_out;                 // (B, U) gradient w.r.t. this step's output, or null
    T* g_out;                       // (B, U) output gradient carried from later steps
    T* dh;                          // (B, U) h-state gradient carried from later steps
    const T* dh_rec;                // (G, B, U) dz_{t+1} @ U^T (per gate when G = 4), or null
    const T* rec_mask;              // (4, B, U) recurrent dropout, or null (then G = 1)
    T* dc;                          // (B, U) c-state gradient, in/out
    T* dz;  idx_t dz_gs, dz_bs;     // gradient w.r.t. pre-activations, gate-strided
    idx_t B, U;
    int act, ract, zero_output;
};

template <typename T, int A, int RA> LSTM_HD void bwd_step_element(const BwdStep<T>& p, idx_t idx) {
    const int act = pick_act<A>(p.act);
    const int ract = pick_act<RA>(p.ract);
    const idx_t U = p.U;
    const idx_t n = p.B * U;
    const idx_t b = idx / U;
    const idx_t u = idx - b * U;
    T go = p.g_out[idx];
    if (p.d_out != nullptr) go += p.d_out[idx];
    const T dhs = p.dh_rec != nullptr ? h_state_grad(p.dh[idx], p.dh_rec, p.rec_mask, n, idx)
                                      : p.dh[idx];
    T* dz = p.dz + b * p.dz_bs + u;
    const T* z = p.z + b * 4 * U + u;
    const bool valid = p.mask == nullptr || p.mask[b] != 0;
    const CellGrad<T> g = cell_step_backward<T>(act, ract, z[0], z[U], z[2 * U], z[3 * U],
                                                p.c_prev[idx], p.c[idx], valid, go, dhs,
                                                p.dc[idx], p.zero_output);
    dz[0] = g.dzi;
    dz[p.dz_gs] = g.dzf;
    dz[2 * p.dz_gs] = g.dzc;
    dz[3 * p.dz_gs] = g.dzo;
    p.dh[idx] = g.dh;
    p.dc[idx] = g.dc;
    p.g_out[idx] = g.g_out;
}

// ---------------------------------------------------------------------------------------
// Deterministic column sums (bias gradient), two passes, no atomics.
// Column j = k*U + u of a gate-strided (T, B) x (4, U) operand; rows r = t*B + b.
// Pass 1: partial[chunk, j] = sum of rows [chunk*rows_per_chunk, ...) in row order.
// Pass 2: out[j] = sum over chunks in chunk order.
// ---------------------------------------------------------------------------------------
template <typename T> struct ColSum {
    const T* in;  idx_t ts, bs, gs;   // element (t, b, k, u) at t*ts + b*bs + k*gs + u
    idx_t T_, B, U;
    idx_t rows_per_chunk, chunks;
    T* partial;                       // (chunks, 4U)
    T* out;                           // (4U)
};

// Divides by B once, for the chunk's first row, then steps (t, b) with a counter: a
// division per element costs more than the sum on a GPU.
template <typename T> LSTM_HD void colsum_partial_element(const ColSum<T>& p, idx_t idx) {
    const idx_t C = 4 * p.U;
    const idx_t chunk = idx / C;
    const idx_t j = idx - chunk * C;
    const idx_t k = j / p.U;
    const idx_t rows = p.T_ * p.B;
    idx_t r = chunk * p.rows_per_chunk;
    idx_t end = r + p.rows_per_chunk;
    if (end > rows) end = rows;
    idx_t b = 0;
    idx_t off = k * p.gs + (j - k * p.U);
    if (r < end) {
        const idx_t t = r / p.B;
        b = r - t * p.B;
        off += t * p.ts + b * p.bs;
    }
    T s = T(0);
    for (; r < end; ++r) {
        s += p.in[off];
        off += p.bs;
        if (++b == p.B) {  // next time step
            b = 0;
            off += p.ts - p.B * p.bs;
        }
    }
    p.partial[idx] = s;
}

template <typename T> LSTM_HD void colsum_final_element(const ColSum<T>& p, idx_t j) {
    const idx_t C = 4 * p.U;
    T s = T(0);
    for (idx_t chunk = 0; chunk < p.chunks; ++chunk) s += p.partial[chunk * C + j];
    p.out[j] = s;
}

}  // namespace lstm
