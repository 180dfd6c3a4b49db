// lstm_cpu_loops.hpp -- the CPU core's time loops over the element code of lstm_cell.cuh.
//
// The algorithm of the CUDA kernel path (lstm_gpu/paths/fused_loop.py), on the host, with
// the input projection moved into the loop:
//
//   forward   per step t:  Z[t] = bias + x_t @ W + h_{t-1} @ R   one packed product
//                          (packed_gemm.hpp: [W; R] packed once per call)
//                          one pass over the rows: the cell (lstm_cell.cuh) per element
//   backward  per step t (reverse): one pass over the rows: the cell's gradient per element,
//                          writing dZ[t];  DH = dZ[t] @ R^T  packed product, read by t-1
//             then dW = X^T dZ, dR = Hprev^T dZ, dx = dZ W^T (large BLAS GEMMs),
//             dbias = colsum dZ
//
// With recurrent dropout (masks mr, (4, B, U)) the recurrent operand is per gate, h * mr_k;
// with per-gate input dropout (mx, (4, B, F)) the input operand is per gate, x * mx_k.
// Z keeps the fused layout (T, B, 4U) in every case (inference: one step's (B, 4U)).
//
// Samples are independent, so the batch is split into slices and each thread runs the whole
// time loop of its slice (its own products on its rows) with no synchronisation per step;
// the large GEMMs after the backward loop are split over rows or columns. A slice has at
// least kMinSliceRows rows (measured: two slices of 4 rows beat one of 8; with fewer rows
// a step's work is about a microsecond, as long as handing it to another core).
//
// Layouts: every array is C-contiguous, time-major (T, B, ...), Keras weight layout
// W (F, 4U), R (U, 4U), gate blocks i, f, c, o. BLAS (backward's large GEMMs) is reached
// through cblas function pointers handed over at run time (lstm_gpu/paths/cpu_native.py).
#pragma once

#include <stddef.h>
#include <string.h>

#include <algorithm>
#include <functional>
#include <vector>

#include "vmath.h"
#define LSTM_EXPF lstm_vmath::exp_f32
#define LSTM_TANHF lstm_vmath::tanh_f32
#include "../lstm_cell.cuh"
#include "packed_gemm.hpp"

// The loops below read and write distinct elements per iteration (in-place updates touch
// only their own element): tell the vectoriser so, as it cannot prove it across pointers.
// (Not `omp simd`: that privatises the loop body's structs into per-lane arrays first.)
#if defined(__clang__)
#define LSTM_SIMD _Pragma("clang loop vectorize(assume_safety)")
#elif defined(__GNUC__)
#define LSTM_SIMD _Pragma("GCC ivdep")
#else
#define LSTM_SIMD
#endif

namespace lstm_cpu {

using lstm::idx_t;

// ------------------------------------------------------------------------------- BLAS
// cblas_?gemm; the enum values are cblas.h's (CblasRowMajor, CblasNoTrans, CblasTrans).
enum { kRowMajor = 101, kNoTrans = 111, kTrans = 112 };
typedef void (*sgemm_fn)(int, int, int, int, int, int, float, const float*, int, const float*,
                         int, float, float*, int);
typedef void (*dgemm_fn)(int, int, int, int, int, int, double, const double*, int,
                         const double*, int, double, double*, int);

struct Blas {
    sgemm_fn sgemm = nullptr;
    dgemm_fn dgemm = nullptr;
};

// C (M, N; ldc) = op(A) @ op(B) + beta * C, row-major; op transposes when ta / tb.
template <typename T>
void gemm(const Blas& blas, bool ta, bool tb, idx_t M, idx_t N, idx_t K, const T* A, idx_t lda,
          const T* B, idx_t ldb, T beta, T* C, idx_t ldc) {
    if (M == 0 || N == 0) return;
    if (K == 0) {  // BLAS would scale C by beta; do it without reading A and B
        for (idx_t m = 0; m < M; ++m)
            for (idx_t n = 0; n < N; ++n) C[m * ldc + n] = beta == T(0) ? T(0) : beta * C[m * ldc + n];
        return;
    }
    const int a = ta ? kTrans : kNoTrans, b = tb ? kTrans : kNoTrans;
    if constexpr (sizeof(T) == 4)
        blas.sgemm(kRowMajor, a, b, (int)M, (int)N, (int)K, 1.0f, A, (int)lda, B, (int)ldb, beta,
                   C, (int)ldc);
    else
        blas.dgemm(kRowMajor, a, b, (int)M, (int)N, (int)K, 1.0, A, (int)lda, B, (int)ldb, beta,
                   C, (int)ldc);
}

// ------------------------------------------------------------------------------- row passes
// One step's element-wise pass over rows [b0, b1) of the batch.
template <typename T> struct FwdRows {
    const T* z;                  // (B, 4U) pre-activations of this step, bias included
    const T* h_prev;             // (B, U)
    const T* c_prev;             // (B, U)
    const T* out_prev;           // (B, U) what a masked step outputs (masked_output's rule,
                                 // resolved per step: zeros before step 0 and with
                                 // zero_output_for_mask, else the previous output)
    const unsigned char* mask;   // (B) or null
    const T* mr;                 // (4, B, U) recurrent dropout masks, or null
    T* h_rec;                    // (4, B, U) h * mr_k for the next GEMM (with mr)
    T* h;                        // (B, U) may alias h_prev
    T* c;                        // (B, U) may alias c_prev
    T* out;                      // (B, U)
    idx_t B, U;
    int act, ract, zero_output;
};

template <typename T> struct BwdRows {
    const T* z;                  // (B, 4U) saved pre-activations
    const T* c_prev;             // (B, U)
    const T* c;                  // (B, U) state after the step
    const unsigned char* mask;   // (B) or null
    const T* d_out;              // (B, U) gradient of this step's output (zeros if none)
    T* g_out;                    // (B, U) output gradient carried from later steps
    T* dh;                       // (B, U) h-state gradient carried from later steps
    const T* dh_rec;             // (G, B, U) dZ[t+1] @ R^T (G = 4 with mr, else 1)
    const T* mr;                 // (4, B, U) recurrent dropout masks (with REC)
    T* dc;                       // (B, U) in/out
    T* dz;                       // (B, 4U) out
    idx_t B, U;
    int act, ract, zero_output;
};

// The element passes run over chunks of a row's units: first the chunk's activations, one
// loop per gate block (and per phi(c) backward) into arrays on the stack, then the rest of
// the cell. Each activation is a chain of about 50 dependent instructions; as one loop over
// whole cells, an element's work was one chain through two activations in a row, too long
// for the CPU to overlap with the next element's, and the pass ran at a third of its
// throughput.
constexpr idx_t kChunk = 128;

// Vector math of an ISA variant: VM::run<T, ACT>(x, y, n) applies activation ACT to a run
// of elements and returns true, or returns false where it has no code of its own for it
// (vmath_avx512.h). ScalarMath has none: the loops below vectorise vmath.h's functions.
struct ScalarMath {
    template <typename T, int ACT> static bool run(const T*, T*, idx_t) { return false; }
};

// y[0, n) = activation of x[0, n) (ACT: the id if known at compile time, else ACT_DYNAMIC).
template <typename T, int ACT, class VM> inline void act_run(int act, const T* x, T* y, idx_t n) {
    if (VM::template run<T, ACT>(x, y, n)) return;
    const int a = lstm::pick_act<ACT>(act);
    LSTM_SIMD
    for (idx_t i = 0; i < n; ++i) y[i] = lstm::act_fn<T>(a, x[i]);
}

// The gates (gates_forward) of units [0, n) of a row whose gate blocks are U apart in z.
template <typename T, int A, int RA, class VM>
inline void gate_runs(int act, int ract, const T* z, idx_t U, idx_t n, T (*q)[kChunk]) {
    act_run<T, RA, VM>(ract, z, q[0], n);
    act_run<T, RA, VM>(ract, z + U, q[1], n);
    act_run<T, A, VM>(act, z + 2 * U, q[2], n);
    act_run<T, RA, VM>(ract, z + 3 * U, q[3], n);
}

// One row of one step. VALID (the row's mask value) is a template argument: a runtime
// bool in the selects of cell_state makes the compiler sink loads into branches, and the
// loop no longer vectorises; masked rows then reduce to the copies of the mask rule.
template <typename T, int A, int RA, class VM, bool VALID>
inline void fwd_row(const FwdRows<T>& p, idx_t b) {
    const int act = lstm::pick_act<A>(p.act), ract = lstm::pick_act<RA>(p.ract);
    const idx_t U = p.U;
    for (idx_t u0 = 0; u0 < U; u0 += kChunk) {
        const idx_t m = std::min(kChunk, U - u0), o = b * U + u0;
        const T* hp = p.h_prev + o;
        const T* cp = p.c_prev + o;
        const T* op = p.out_prev + o;
        T* h = p.h + o;
        T* c = p.c + o;
        T* out = p.out + o;
        T q[4][kChunk];  // the gates; then c_new in q[0], phi(c_new) in q[1]
        if (VALID) {
            gate_runs<T, A, RA, VM>(act, ract, p.z + b * 4 * U + u0, U, m, q);
            LSTM_SIMD
            for (idx_t u = 0; u < m; ++u)
                q[0][u] = lstm::cell_c(lstm::Gates<T>{q[0][u], q[1][u], q[2][u], q[3][u]}, cp[u]);
            act_run<T, A, VM>(act, q[0], q[1], m);
        }
        LSTM_SIMD
        for (idx_t u = 0; u < m; ++u) {
            const lstm::CellState<T> s = VALID
                ? lstm::cell_state<T>(q[3][u], q[0][u], q[1][u], hp[u], cp[u], true, op[u])
                : lstm::cell_state<T>(T(0), T(0), T(0), hp[u], cp[u], false, op[u]);
            h[u] = s.h;
            c[u] = s.c;
            out[u] = s.out;
        }
    }
}

template <typename T, int A, int RA, class VM>
inline void fwd_rows_body(const FwdRows<T>& p, idx_t b0, idx_t b1) {
    const idx_t U = p.U, n = p.B * U;
    for (idx_t b = b0; b < b1; ++b) {
        if (p.mask == nullptr || p.mask[b] != 0)
            fwd_row<T, A, RA, VM, true>(p, b);
        else
            fwd_row<T, A, RA, VM, false>(p, b);
        if (p.mr != nullptr) {
            const T* h = p.h + b * U;
            for (int k = 0; k < 4; ++k) {
                const T* m = p.mr + k * n + b * U;
                T* hr = p.h_rec + k * n + b * U;
                LSTM_SIMD
                for (idx_t u = 0; u < U; ++u) hr[u] = h[u] * m[u];
            }
        }
    }
}

// REC: recurrent dropout masks present (h_state_grad's per-gate form); compile-time for the
// same reason as VALID. Chunked like fwd_row: the activations first, then the gradients.
template <typename T, int A, int RA, class VM, bool REC, bool VALID>
inline void bwd_row(const BwdRows<T>& p, idx_t b) {
    const int act = lstm::pick_act<A>(p.act), ract = lstm::pick_act<RA>(p.ract);
    const idx_t U = p.U, n = p.B * U;
    const int zero_output = p.zero_output;
    const T* mr = REC ? p.mr : nullptr;
    for (idx_t u0 = 0; u0 < U; u0 += kChunk) {
        const idx_t m = std::min(kChunk, U - u0), o = b * U + u0;
        const T* z = p.z + b * 4 * U + u0;
        T* dz = p.dz + b * 4 * U + u0;
        T q[5][kChunk];  // cell_acts: the gates, then phi(c)
        if (VALID) {
            gate_runs<T, A, RA, VM>(act, ract, z, U, m, q);
            act_run<T, A, VM>(act, p.c + o, q[4], m);
        }
        LSTM_SIMD
        for (idx_t u = 0; u < m; ++u) {
            const idx_t i = o + u;
            const T go = p.g_out[i] + p.d_out[i];
            const T dhs = lstm::h_state_grad(p.dh[i], p.dh_rec, mr, n, i);
            const lstm::CellActs<T> a =
                VALID ? lstm::CellActs<T>{{q[0][u], q[1][u], q[2][u], q[3][u]}, q[4][u]}
                      : lstm::CellActs<T>{};
            const lstm::CellGrad<T> g = lstm::cell_grad<T>(
                act, ract, a, z[u], z[U + u], z[2 * U + u], z[3 * U + u], p.c_prev[i], p.c[i],
                VALID, go, dhs, p.dc[i], zero_output);
            dz[u] = g.dzi;
            dz[U + u] = g.dzf;
            dz[2 * U + u] = g.dzc;
            dz[3 * U + u] = g.dzo;
            p.dh[i] = g.dh;
            p.dc[i] = g.dc;
            p.g_out[i] = g.g_out;
        }
    }
}

template <typename T, int A, int RA, class VM, bool REC>
inline void bwd_rows_body(const BwdRows<T>& p, idx_t b0, idx_t b1) {
    for (idx_t b = b0; b < b1; ++b) {
        if (p.mask == nullptr || p.mask[b] != 0)
            bwd_row<T, A, RA, VM, REC, true>(p, b);
        else
            bwd_row<T, A, RA, VM, REC, false>(p, b);
    }
}

// The ISA variant's code: element passes and the packed per-step product (packed_gemm.hpp).
template <typename T> struct Kernels {
    void (*fwd)(const FwdRows<T>&, idx_t, idx_t);
    void (*bwd)(const BwdRows<T>&, idx_t, idx_t);      // without recurrent dropout
    void (*bwd_rec)(const BwdRows<T>&, idx_t, idx_t);  // with recurrent dropout
    void (*gemm)(const PanelGemm<T>&, idx_t r0, idx_t r1, idx_t p0, idx_t p1);
    Geometry geometry;                                 // of the panels gemm reads
};

// ------------------------------------------------------------------------------- problems
template <typename T> struct Problem {
    const T* x;                  // (T, B, F)
    idx_t T_, B, F, U;
    const T* W;                  // (F, 4U)
    const T* R;                  // (U, 4U)
    const T* bias;               // (4U) or null
    const T* h0;                 // (B, U)
    const T* c0;                 // (B, U)
    const unsigned char* mask;   // (T, B) or null
    const T* mx;                 // (G, B, F), G = mx_gates (1 or 4), or null
    int mx_gates;
    const T* mr;                 // (4, B, U) or null
    int act, ract, zero_output;
};

template <typename T> struct ForwardOut {
    T* seq;                      // (T, B, U) outputs
    T* h;                        // (B, U) last h state
    T* c;                        // (B, U) last c state
    T* Z;                        // (T, B, 4U) pre-activations (saved when training), or
                                 // one step's (B, 4U) scratch in inference
    idx_t z_step;                // B * 4U, or 0 for the scratch
    T* HS;                       // (T, B, U) h after each step, or null (inference)
    T* CS;                       // (T, B, U) c after each step, or null (inference)
};

template <typename T> struct BackwardIO {
    const T* Z;                  // forward's saved arrays
    const T* HS;
    const T* CS;
    const T* d_last;             // (B, U) or null: gradients of the outputs
    const T* d_seq;              // (T, B, U) or null
    const T* d_h;                // (B, U) or null
    const T* d_c;                // (B, U) or null
    T* dZ;                       // (T, B, 4U) workspace
    T* dx;                       // (T, B, F)
    T* dh0;                      // (B, U)
    T* dc0;                      // (B, U)
    T* dW;                       // (F, 4U)
    T* dR;                       // (U, 4U)
    T* dbias;                    // (4U) or null
};

typedef std::function<void(int, const std::function<void(int)>&)> Parallel;

constexpr idx_t kMinSliceRows = 4;

// Batch slices for the time loops: one per thread, each of at least kMinSliceRows rows.
inline int batch_slices(int threads, idx_t B) {
    return (int)std::max<idx_t>(1, std::min<idx_t>(threads, B / kMinSliceRows));
}

// [begin, end) of part i of n equal parts of [0, total).
inline void split(idx_t total, int n, int i, idx_t* begin, idx_t* end) {
    *begin = total * i / n;
    *end = total * (i + 1) / n;
}

// dst (rows, F) = src (rows, F) * mask (B, F) broadcast over time: row r uses mask row r % B.
template <typename T>
void masked_rows(const T* src, const T* mask, idx_t r0, idx_t r1, idx_t B, idx_t F, T* dst) {
    for (idx_t r = r0; r < r1; ++r) {
        const T* s = src + r * F;
        const T* m = mask + (r % B) * F;
        T* d = dst + r * F;
        LSTM_SIMD
        for (idx_t f = 0; f < F; ++f) d[f] = s[f] * m[f];
    }
}

// The input operand of gate block k (or of all gates when mx_gates <= 1): x, or x * mx_k.
template <typename T>
const T* gate_input(const Problem<T>& P, int k, idx_t r0, idx_t r1, T* scratch) {
    if (P.mx == nullptr) return P.x;
    masked_rows(P.x, P.mx + (P.mx_gates == 4 ? k : 0) * P.B * P.F, r0, r1, P.B, P.F, scratch);
    return scratch;
}

template <typename T>
void forward(const Kernels<T>& kern, const Parallel& parallel, int threads,
             const Problem<T>& P, const ForwardOut<T>& out) {
    const idx_t TT = P.T_, B = P.B, F = P.F, U = P.U, G4 = 4 * U, rows = TT * B, n = B * U;
    if (TT == 0 || B == 0) return;

    // The input operand with dropout: x * mx, (rows, F), or x * mx_k per gate block k,
    // (4, rows, F), over row slices.
    const int in_gates = P.mx_gates == 4 ? 4 : 1;
    std::vector<T> xm(P.mx != nullptr ? (size_t)(in_gates * rows * F) : 0);
    if (P.mx != nullptr) {
        const int parts = (int)std::max<idx_t>(1, std::min<idx_t>(threads, rows / 64));
        parallel(parts, [&](int part) {
            idx_t r0, r1;
            split(rows, parts, part, &r0, &r1);
            for (int k = 0; k < in_gates; ++k) gate_input(P, k, r0, r1, xm.data() + k * rows * F);
        });
    }
    const T* xin = P.mx != nullptr ? xm.data() : P.x;
    const idx_t x_gate = in_gates == 4 ? rows * F : 0;

    // The time loop, one batch slice per thread.
    static thread_local Packed<T> calling_thread_packed;  // keeps its capacity between calls
    Packed<T>& packed = calling_thread_packed;  // the workers read the calling thread's
    pack_gates(P.W, F, P.R, U, P.bias, kern.geometry, &packed);
    std::vector<T> zeros(n, T(0));
    std::vector<T> h_rec(P.mr != nullptr ? (size_t)(4 * n) : 0);
    const int parts = batch_slices(threads, B);
    const bool training = out.HS != nullptr;
    parallel(parts, [&](int part) {
        idx_t b0, b1;
        split(B, parts, part, &b0, &b1);
        const idx_t nb = b1 - b0;
        if (nb == 0) return;
        if (!training) {
            memcpy(out.h + b0 * U, P.h0 + b0 * U, nb * U * sizeof(T));
            memcpy(out.c + b0 * U, P.c0 + b0 * U, nb * U * sizeof(T));
        }
        if (P.mr != nullptr)
            for (int k = 0; k < 4; ++k)
                for (idx_t i = b0 * U; i < b1 * U; ++i) h_rec[k * n + i] = P.h0[i] * P.mr[k * n + i];
        FwdRows<T> p;
        p.mr = P.mr;
        p.h_rec = h_rec.data();
        p.B = B;
        p.U = U;
        p.act = P.act;
        p.ract = P.ract;
        for (idx_t t = 0; t < TT; ++t) {
            T* Zt = out.Z + t * out.z_step;
            p.z = Zt;
            if (training) {
                p.h_prev = t == 0 ? P.h0 : out.HS + (t - 1) * n;
                p.c_prev = t == 0 ? P.c0 : out.CS + (t - 1) * n;
                p.h = out.HS + t * n;
                p.c = out.CS + t * n;
            } else {
                p.h_prev = p.h = out.h;
                p.c_prev = p.c = out.c;
            }
            p.out_prev = (t == 0 || P.zero_output) ? zeros.data() : out.seq + (t - 1) * n;
            p.out = out.seq + t * n;
            p.mask = P.mask != nullptr ? P.mask + t * B : nullptr;
            // Z[t] = bias + x[t] @ W + h_{t-1} @ R (x * mx_k, h * mr_k for gate block k with
            // dropout)
            const bool rec = P.mr != nullptr;
            PanelGemm<T> g;
            g.B = &packed;
            g.seg[0] = Segment<T>{xin + t * B * F, F, x_gate, 0, F};
            g.seg[1] = Segment<T>{rec ? h_rec.data() : p.h_prev, U, rec ? n : 0, F, U};
            g.C = Zt;
            g.ldc = G4;
            kern.gemm(g, b0, b1, 0, packed.count);
            kern.fwd(p, b0, b1);
        }
        if (training) {
            memcpy(out.h + b0 * U, out.HS + (TT - 1) * n + b0 * U, nb * U * sizeof(T));
            memcpy(out.c + b0 * U, out.CS + (TT - 1) * n + b0 * U, nb * U * sizeof(T));
        }
    });
}

template <typename T>
void backward(const Blas& blas, const Kernels<T>& kern, const Parallel& parallel,
              int threads, const Problem<T>& P, const BackwardIO<T>& io) {
    const idx_t TT = P.T_, B = P.B, F = P.F, U = P.U, G4 = 4 * U, rows = TT * B, n = B * U;
    auto fill = [](T* dst, const T* src, idx_t count) {
        if (src != nullptr)
            memcpy(dst, src, count * sizeof(T));
        else
            std::fill(dst, dst + count, T(0));
    };
    fill(io.dh0, io.d_h, n);
    fill(io.dc0, io.d_c, n);
    if (TT == 0 || B == 0) {
        std::fill(io.dx, io.dx + rows * F, T(0));
        std::fill(io.dW, io.dW + F * G4, T(0));
        std::fill(io.dR, io.dR + U * G4, T(0));
        if (io.dbias != nullptr) std::fill(io.dbias, io.dbias + G4, T(0));
        return;
    }
    const int rec_gates = P.mr != nullptr ? 4 : 1;
    std::vector<T> g_out(n);
    fill(g_out.data(), io.d_last, n);
    std::vector<T> dh_rec(rec_gates * n, T(0));
    std::vector<T> zeros(io.d_seq == nullptr ? n : 0, T(0));
    const auto bwd_rows = P.mr != nullptr ? kern.bwd_rec : kern.bwd;

    // The reverse time loop, one batch slice per thread.
    static thread_local Packed<T> calling_thread_packed;  // keeps its capacity between calls
    Packed<T>& packed = calling_thread_packed;  // the workers read the calling thread's
    pack_transposed(P.R, U, kern.geometry, &packed);
    const int parts = batch_slices(threads, B);
    parallel(parts, [&](int part) {
        idx_t b0, b1;
        split(B, parts, part, &b0, &b1);
        const idx_t nb = b1 - b0;
        if (nb == 0) return;
        BwdRows<T> p;
        p.g_out = g_out.data();
        p.dh = io.dh0;
        p.dh_rec = dh_rec.data();
        p.mr = P.mr;
        p.dc = io.dc0;
        p.B = B;
        p.U = U;
        p.act = P.act;
        p.ract = P.ract;
        p.zero_output = P.zero_output;
        for (idx_t t = TT - 1; t >= 0; --t) {
            p.z = io.Z + t * B * G4;
            p.c_prev = t == 0 ? P.c0 : io.CS + (t - 1) * n;
            p.c = io.CS + t * n;
            p.mask = P.mask != nullptr ? P.mask + t * B : nullptr;
            p.d_out = io.d_seq != nullptr ? io.d_seq + t * n : zeros.data();
            p.dz = io.dZ + t * B * G4;
            bwd_rows(p, b0, b1);
            // DH = dZ[t] @ R^T (per gate block k, into dh_rec[k], with recurrent dropout)
            for (int k = 0; k < rec_gates; ++k) {
                const idx_t k0 = rec_gates == 4 ? k * U : 0;
                PanelGemm<T> g;
                g.B = &packed;
                g.seg[0] = Segment<T>{p.dz + k0, G4, 0, k0, G4 / rec_gates};
                g.C = dh_rec.data() + k * n;
                g.ldc = U;
                kern.gemm(g, b0, b1, 0, packed.count);
            }
        }
        for (idx_t i = b0 * U; i < b1 * U; ++i)
            io.dh0[i] = lstm::h_state_grad(io.dh0[i], dh_rec.data(), P.mr, n, i);
    });

    // dx = dZ W^T (per gate, times mx_k, with per-gate input masks), over row slices.
    const int in_gates = P.mx_gates == 4 ? 4 : 1;
    const int row_parts = (int)std::max<idx_t>(1, std::min<idx_t>(threads, rows / 64));
    parallel(row_parts, [&](int part) {
        idx_t r0, r1;
        split(rows, row_parts, part, &r0, &r1);
        const idx_t nr = r1 - r0;
        T* dx = io.dx + r0 * F;
        const T* dz = io.dZ + r0 * G4;
        if (P.mx == nullptr || in_gates == 1) {
            gemm<T>(blas, false, true, nr, F, G4, dz, G4, P.W, G4, T(0), dx, F);
            if (P.mx != nullptr) masked_rows(io.dx, P.mx, r0, r1, B, F, io.dx);
            return;
        }
        std::vector<T> tmp((size_t)(nr * F));
        std::fill(dx, dx + nr * F, T(0));
        for (int k = 0; k < 4; ++k) {
            gemm<T>(blas, false, true, nr, F, U, dz + k * U, G4, P.W + k * U, G4, T(0),
                    tmp.data(), F);
            const T* m = P.mx + k * B * F;
            for (idx_t r = r0; r < r1; ++r) {
                const T* tr = tmp.data() + (r - r0) * F;
                const T* mr = m + (r % B) * F;
                T* d = dx + (r - r0) * F;
                LSTM_SIMD
                for (idx_t f = 0; f < F; ++f) d[f] += tr[f] * mr[f];
            }
        }
    });

    // dW = X^T dZ, dR = Hprev^T dZ (per gate with masks), dbias: over column slices.
    std::vector<T> xm(P.mx != nullptr ? (size_t)(rows * F) : 0);
    std::vector<T> hm(P.mr != nullptr ? (size_t)(rows * U) : 0);
    const int col_parts = (int)std::max<idx_t>(1, std::min<idx_t>(threads, U / 16));
    for (int k = 0; k < std::max(in_gates, rec_gates); ++k) {
        // The operands of gate block k (every block when neither input is per gate).
        const bool per_gate = in_gates == 4 || rec_gates == 4;
        if (k > 0 && !per_gate) break;
        const T* xin = P.x;
        if (P.mx != nullptr && (k == 0 || in_gates == 4)) {
            parallel(row_parts, [&](int part) {
                idx_t r0, r1;
                split(rows, row_parts, part, &r0, &r1);
                gate_input(P, k, r0, r1, xm.data());
            });
        }
        if (P.mx != nullptr) xin = xm.data();
        const T* hprev0 = P.h0;                     // rows of step 0
        const T* hprev1 = io.HS;                    // rows of steps 1 .. T-1
        if (P.mr != nullptr) {
            const T* m = P.mr + k * n;
            parallel(row_parts, [&](int part) {
                idx_t r0, r1;
                split(rows, row_parts, part, &r0, &r1);
                for (idx_t r = r0; r < r1; ++r) {
                    const T* h = r < B ? P.h0 + r * U : io.HS + (r - B) * U;
                    for (idx_t u = 0; u < U; ++u) hm[r * U + u] = h[u] * m[(r % B) * U + u];
                }
            });
            hprev0 = hm.data();
            hprev1 = hm.data() + n;
        }
        const idx_t c0 = per_gate ? k * U : 0, width = per_gate ? U : G4;
        parallel(col_parts, [&](int part) {
            idx_t j0, j1;
            split(width, col_parts, part, &j0, &j1);
            j0 += c0;
            j1 += c0;
            const idx_t w = j1 - j0;
            if (w == 0) return;
            gemm<T>(blas, true, false, F, w, rows, xin, F, io.dZ + j0, G4, T(0), io.dW + j0, G4);
            gemm<T>(blas, true, false, U, w, B, hprev0, U, io.dZ + j0, G4, T(0), io.dR + j0, G4);
            gemm<T>(blas, true, false, U, w, rows - B, hprev1, U, io.dZ + B * G4 + j0, G4, T(1),
                    io.dR + j0, G4);
            if (io.dbias != nullptr) {
                T* db = io.dbias + j0;
                std::fill(db, db + w, T(0));
                for (idx_t r = 0; r < rows; ++r) {
                    const T* row = io.dZ + r * G4 + j0;
                    LSTM_SIMD
                    for (idx_t j = 0; j < w; ++j) db[j] += row[j];
                }
            }
        });
    }
}

}  // namespace lstm_cpu
