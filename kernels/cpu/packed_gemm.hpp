// packed_gemm.hpp -- the time loops' per-step products, on weights packed once per call.
//
//   forward   Z[t] (B, 4U) = bias + Xin[t] (B, F) @ W (F, 4U) + Hin (B, U) @ R (U, 4U)
//             Xin = x, or x * mx_k for gate block k;  Hin = h, or h * mr_k (dropout)
//   backward  DH (B, U)    = dZ[t] (B, 4U) @ R^T (4U, U) (per gate block with recurrent dropout)
//
// A BLAS call per step repacks R on every step (OpenBLAS: about 14 % of the forward time at
// batch 128) and locks around its buffers when several threads call it; the input projection
// as one large GEMM before the loop writes all of Z (T, B, 4U) to memory and the loop reads
// it back. Here [W; R] is packed once per call into *panels*: K rows of NV vectors of L
// lanes, contiguous, zero-padded past the last unit, and a register-blocked micro-kernel (MR
// rows x NV vectors of accumulators, one broadcast of A per row and k) computes each step's
// whole pre-activation, input projection included, streaming each panel from L1 or L2.
//
// Panels of the forward product (pack_gates): panel (j, q) holds gate blocks q*NV .. q*NV+NV-1
// of units [j*L, j*L + L), rows [0, F) from W and [F, F + U) from R: the NV vectors of one
// row of a panel are NV gates of the same units, so all four gates of a unit block are done
// after 4 / NV panels. Panels of the backward product (pack_transposed): panel j holds units
// [j*NV*L, (j+1)*NV*L) of R^T over k in [0, 4U). Each vector of a panel records where it
// goes in C (its column and how many lanes are real) and, forward, its gate (which block of
// a gated operand it reads).
//
// The micro-kernel is written once with GCC/Clang vector extensions (a vector of L lanes of T,
// BYTES wide); the ISA variants of lstm_cpu_module.cpp inline it into functions compiled for
// AVX-512, AVX2+FMA or the baseline, and pick (L, NV, MR) to fill that ISA's registers.
// Other compilers get a plain-array vector that they may vectorise themselves.
#pragma once

#include <stddef.h>
#include <string.h>

#include <algorithm>
#include <vector>

#include "../lstm_cell.cuh"

namespace lstm_cpu {

using lstm::idx_t;

// ------------------------------------------------------------------------------- vectors
// Simd<T, BYTES>: a vector V of L lanes of T; load / store of L lanes at any alignment, and of
// the first n lanes (the others load as zero), zero; V supports V += V and V * T.
#if defined(__GNUC__) || defined(__clang__)
#if defined(__GNUC__) && !defined(__clang__)
// Vectors wider than the baseline are passed between inline functions; every use is inlined
// into a function of the matching ISA (flatten), so no call crosses the ABI GCC warns about
// (for the rest of the translation unit: the warning points wherever such a value flows).
#pragma GCC diagnostic ignored "-Wpsabi"
#endif
template <typename T, int BYTES> struct Simd {
    typedef T V __attribute__((vector_size(BYTES)));
    typedef T Unaligned __attribute__((vector_size(BYTES), aligned(sizeof(T)), may_alias));
    static constexpr int L = BYTES / (int)sizeof(T);
    static V zero() { return V{}; }
    static V load(const T* p) { return *(const Unaligned*)p; }
    static void store(T* p, V v) { *(Unaligned*)p = v; }
    static V load_n(const T* p, int n) {
        V v = V{};
        for (int i = 0; i < n; ++i) v[i] = p[i];
        return v;
    }
    static void store_n(T* p, V v, int n) {
        for (int i = 0; i < n; ++i) p[i] = v[i];
    }
};
#else
template <typename T, int BYTES> struct Simd {
    static constexpr int L = BYTES / (int)sizeof(T);
    struct V {
        T x[L];
        V operator*(T s) const {
            V r;
            for (int i = 0; i < L; ++i) r.x[i] = x[i] * s;
            return r;
        }
        V& operator+=(const V& o) {
            for (int i = 0; i < L; ++i) x[i] += o.x[i];
            return *this;
        }
    };
    static V zero() { return V{}; }
    static V load(const T* p) { return load_n(p, L); }
    static void store(T* p, const V& v) { store_n(p, v, L); }
    static V load_n(const T* p, int n) {
        V v = V{};
        for (int i = 0; i < n; ++i) v.x[i] = p[i];
        return v;
    }
    static void store_n(T* p, const V& v, int n) {
        for (int i = 0; i < n; ++i) p[i] = v.x[i];
    }
};
#endif

// ------------------------------------------------------------------------------- packing
// Where vector v of a panel goes: C columns [col, col + lanes) (lanes 0: padding only), and
// the gate block it belongs to (forward panels; 0 for the backward ones).
struct VecCols {
    idx_t col;
    int lanes;
    int gate;
};

// The geometry of one ISA variant: L lanes per vector, NV vectors per panel row, MR rows per
// micro-kernel tile.
struct Geometry {
    int L, NV, MR;
};

// Packed B operand: `count` panels of K rows x (NV * L), one after the other, the C columns of
// each panel's vectors (cols[p * NV + v]), and the accumulators' initial values (init[p * NV
// * L + v * L + lane]: the bias) or none (zeros).
template <typename T> struct Packed {
    std::vector<T> data;
    std::vector<VecCols> cols;
    std::vector<unsigned char> full;  // per panel: every vector has L lanes
    std::vector<T> init;              // empty: zeros
    idx_t K = 0, count = 0;
    int L = 0, NV = 0;

    const T* panel(idx_t p) const { return data.data() + p * K * NV * L; }
};

// Forward panels of [W; R] ((F + U), 4U: the input kernel's rows, then the recurrent
// kernel's) for C = Z (B, 4U), initialised with bias (4U, or null: zeros). Panel (j, q) =
// j * (4 / NV) + q; its rows [0, F) multiply x and [F, F + U) multiply h.
template <typename T>
void pack_gates(const T* W, idx_t F, const T* R, idx_t U, const T* bias, Geometry g,
                Packed<T>* out) {
    const int L = g.L, NV = g.NV, groups = 4 / NV;
    const idx_t blocks = (U + L - 1) / L, w = (idx_t)NV * L, K = F + U;
    out->K = K;
    out->L = L;
    out->NV = NV;
    out->count = blocks * groups;
    out->data.assign((size_t)(out->count * K * w), T(0));
    out->cols.resize((size_t)(out->count * NV));
    out->full.resize((size_t)out->count);
    out->init.assign(bias != nullptr ? (size_t)(out->count * w) : 0, T(0));
    for (idx_t j = 0; j < blocks; ++j) {
        const idx_t u0 = j * L;
        const int lanes = (int)std::min<idx_t>(L, U - u0);
        for (int q = 0; q < groups; ++q) {
            const idx_t p = j * groups + q;
            T* dst = out->data.data() + p * K * w;
            out->full[(size_t)p] = lanes == L;
            for (int v = 0; v < NV; ++v) {
                const int gate = q * NV + v;
                const idx_t col = gate * U + u0;
                const size_t bytes = (size_t)lanes * sizeof(T);
                out->cols[(size_t)(p * NV + v)] = VecCols{col, lanes, gate};
                for (idx_t k = 0; k < K; ++k) {
                    const T* row = k < F ? W + k * 4 * U : R + (k - F) * 4 * U;
                    memcpy(dst + k * w + v * L, row + col, bytes);
                }
                if (bias != nullptr) memcpy(out->init.data() + p * w + v * L, bias + col, bytes);
            }
        }
    }
}

// Backward panels of R^T (4U, U) for C = DH (B, U): panel j covers units [j*NV*L, ...).
template <typename T> void pack_transposed(const T* R, idx_t U, Geometry g, Packed<T>* out) {
    const int L = g.L, NV = g.NV;
    const idx_t K = 4 * U, w = (idx_t)NV * L, count = (U + w - 1) / w;
    out->K = K;
    out->L = L;
    out->NV = NV;
    out->count = count;
    out->data.assign((size_t)(count * K * w), T(0));
    out->cols.resize((size_t)(count * NV));
    out->full.resize((size_t)count);
    out->init.clear();
    for (idx_t p = 0; p < count; ++p) {
        out->full[(size_t)p] = (p + 1) * w <= U;
        for (int v = 0; v < NV; ++v) {
            const idx_t u0 = p * w + v * L;
            const int lanes = (int)std::max<idx_t>(0, std::min<idx_t>(L, U - u0));
            out->cols[(size_t)(p * NV + v)] = VecCols{u0, lanes, 0};
        }
    }
    for (idx_t u = 0; u < U; ++u) {
        const T* src = R + u * K;
        T* dst = out->data.data() + (u / w) * K * w + u % w;
        for (idx_t k = 0; k < K; ++k) dst[k * w] = src[k];
    }
}

// ------------------------------------------------------------------------------- products
// C rows [r0, r1) = init + sum over segments of A_s @ (panel rows [k0_s, k0_s + kn_s)), over
// panels [p0, p1). Segment s: A_s (rows, kn_s; lda), with a_gate != 0 the vectors of gate
// block k reading A_s + k * a_gate (dropout's x * mx_k, h * mr_k).
template <typename T> struct Segment {
    const T* A = nullptr;
    idx_t lda = 0, a_gate = 0;
    idx_t k0 = 0, kn = 0;
};

template <typename T> struct PanelGemm {
    const Packed<T>* B;
    Segment<T> seg[2];  // the second one only with kn > 0
    T* C;
    idx_t ldc;
};

// acc (M rows x NV vectors of panel p) += segment s. GATED: each vector has its own A.
template <class S, typename T, int M, int NV, bool GATED>
inline void accumulate(typename S::V (&acc)[M][NV], const Segment<T>& s, const T* panel,
                       const VecCols* vc, idx_t r) {
    typedef typename S::V V;
    constexpr int L = S::L;
    if (s.kn <= 0) return;
    const T* P = panel + s.k0 * NV * L;
    const T* A[M][GATED ? NV : 1];
    for (int m = 0; m < M; ++m)
        for (int v = 0; v < (GATED ? NV : 1); ++v)
            A[m][v] = s.A + (r + m) * s.lda + (GATED ? vc[v].gate * s.a_gate : 0);
    idx_t k = 0;
    do {  // kn >= 1: no zero-trip path that would keep the accumulators in memory
        V b[NV];
        for (int v = 0; v < NV; ++v) b[v] = S::load(P + k * NV * L + v * L);
        for (int m = 0; m < M; ++m) {
            if (GATED) {
                for (int v = 0; v < NV; ++v) acc[m][v] += b[v] * A[m][v][k];
            } else {
                const T a = A[m][0][k];
                for (int v = 0; v < NV; ++v) acc[m][v] += b[v] * a;
            }
        }
    } while (++k < s.kn);
}

// M rows x NV vectors of one panel. G0, G1: segment 0 / 1 gated. FULL: every vector of the
// panel has L real lanes (else some are partial or padding).
template <class S, typename T, int M, int NV, bool G0, bool G1, bool FULL>
inline void micro_tile(const PanelGemm<T>& g, idx_t r, idx_t p) {
    typedef typename S::V V;
    constexpr int L = S::L;
    const VecCols* vc = g.B->cols.data() + p * NV;
    const T* init = g.B->init.empty() ? nullptr : g.B->init.data() + p * NV * L;
    V acc[M][NV];
    for (int v = 0; v < NV; ++v) {
        const V a0 = init != nullptr ? S::load(init + v * L) : S::zero();
        for (int m = 0; m < M; ++m) acc[m][v] = a0;
    }
    const T* panel = g.B->panel(p);
    accumulate<S, T, M, NV, G0>(acc, g.seg[0], panel, vc, r);
    accumulate<S, T, M, NV, G1>(acc, g.seg[1], panel, vc, r);
    for (int m = 0; m < M; ++m)
        for (int v = 0; v < NV; ++v) {
            T* c = g.C + (r + m) * g.ldc + vc[v].col;
            if (FULL)
                S::store(c, acc[m][v]);
            else
                S::store_n(c, acc[m][v], vc[v].lanes);
        }
}

template <class S, typename T, int NV, bool G0, bool G1, bool FULL, int M>
inline void tile_rows(const PanelGemm<T>& g, idx_t r, idx_t m, idx_t p) {
    if constexpr (M > 1) {
        if (m < M) return tile_rows<S, T, NV, G0, G1, FULL, M - 1>(g, r, m, p);
    }
    micro_tile<S, T, M, NV, G0, G1, FULL>(g, r, p);
}

template <class S, typename T, int NV, int MR, bool G0, bool G1>
inline void panel_rows(const PanelGemm<T>& g, idx_t r0, idx_t r1, idx_t p) {
    const bool full = g.B->full[(size_t)p] != 0;
    for (idx_t r = r0; r < r1; r += MR) {
        const idx_t m = std::min<idx_t>(MR, r1 - r);
        if (full)
            tile_rows<S, T, NV, G0, G1, true, MR>(g, r, m, p);
        else
            tile_rows<S, T, NV, G0, G1, false, MR>(g, r, m, p);
    }
}

// Panels outer (each stays in L1/L2 while every row block of [r0, r1) passes over it).
template <class S, typename T, int NV, int MR>
inline void panel_gemm(const PanelGemm<T>& g, idx_t r0, idx_t r1, idx_t p0, idx_t p1) {
    const bool g0 = g.seg[0].a_gate != 0, g1 = g.seg[1].kn > 0 && g.seg[1].a_gate != 0;
    for (idx_t p = p0; p < p1; ++p) {
        if (!g0 && !g1)
            panel_rows<S, T, NV, MR, false, false>(g, r0, r1, p);
        else if (!g0)
            panel_rows<S, T, NV, MR, false, true>(g, r0, r1, p);
        else if (!g1)
            panel_rows<S, T, NV, MR, true, false>(g, r0, r1, p);
        else
            panel_rows<S, T, NV, MR, true, true>(g, r0, r1, p);
    }
}

}  // namespace lstm_cpu
