// packed_gemm.hpp -- the time loops' per-step products, on recurrent weights packed once per call.
//
//   forward   Z[t] (B, 4U) += Hin (B, U) @ R (U, 4U)     Hin = h, or h * mr_k for gate block k
//   backward  DH (B, U)     = dZ[t] (B, 4U) @ R^T (4U, U) (per gate block with recurrent dropout)
//
// A BLAS call per step repacks R on every step (OpenBLAS: about 14 % of the forward time at
// batch 128) and locks around its buffers when several threads call it. Here R is packed
// once per call into *panels*: K rows of NV vectors of L lanes, contiguous, zero-padded past
// the last unit, so a register-blocked micro-kernel (MR rows x NV vectors of accumulators,
// one broadcast of A per row and k) streams each panel from L1 or L2 with unit stride.
//
// Panels of the forward product (pack_gates): panel (j, q) holds gate blocks q*NV .. q*NV+NV-1
// of units [j*L, j*L + L): the NV vectors of one row of a panel are NV gates of the same units,
// so all four gates of a unit block are done after 4 / NV panels. Panels of the backward
// product (pack_transposed): panel j holds units [j*NV*L, (j+1)*NV*L) of R^T over k in [0, 4U).
// Each vector of a panel records where it goes in C (its column and how many lanes are real)
// and, forward, its gate (which block of Hin it reads with recurrent dropout).
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
// into a function of the matching ISA (flatten), so no call crosses the ABI GCC warns about.
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

// Packed B operand: `count` panels of K rows x (NV * L), one after the other, and the C
// columns of each panel's vectors (cols[p * NV + v]).
template <typename T> struct Packed {
    std::vector<T> data;
    std::vector<VecCols> cols;
    std::vector<unsigned char> full;  // per panel: every vector has L lanes
    idx_t K = 0, count = 0;
    int L = 0, NV = 0;

    const T* panel(idx_t p) const { return data.data() + p * K * NV * L; }
};

// Forward panels of R (U, 4U) for C = Z (B, 4U): panel (j, q) = j * (4 / NV) + q.
template <typename T> void pack_gates(const T* R, idx_t U, Geometry g, Packed<T>* out) {
    const int L = g.L, NV = g.NV, groups = 4 / NV;
    const idx_t blocks = (U + L - 1) / L, w = (idx_t)NV * L;
    out->K = U;
    out->L = L;
    out->NV = NV;
    out->count = blocks * groups;
    out->data.assign((size_t)(out->count * U * w), T(0));
    out->cols.resize((size_t)(out->count * NV));
    out->full.resize((size_t)out->count);
    for (idx_t j = 0; j < blocks; ++j) {
        const idx_t u0 = j * L;
        const int lanes = (int)std::min<idx_t>(L, U - u0);
        for (int q = 0; q < groups; ++q) {
            const idx_t p = j * groups + q;
            T* dst = out->data.data() + p * U * w;
            out->full[(size_t)p] = lanes == L;
            for (int v = 0; v < NV; ++v) {
                const int gate = q * NV + v;
                out->cols[(size_t)(p * NV + v)] = VecCols{gate * U + u0, lanes, gate};
                for (idx_t k = 0; k < U; ++k)
                    memcpy(dst + k * w + v * L, R + k * 4 * U + gate * U + u0,
                           (size_t)lanes * sizeof(T));
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
// One GEMM over packed panels: C rows [r0, r1) (+)= A (rows, K; lda) @ panels [p0, p1),
// over panel rows [k0, k0 + kn) (A's columns [k0, k0 + kn) likewise). With a_gate != 0, the
// vectors of gate block k read A + k * a_gate (recurrent dropout's h * mr_k).
template <typename T> struct PanelGemm {
    const Packed<T>* B;
    const T* A;
    idx_t lda, a_gate;
    T* C;
    idx_t ldc;
    idx_t k0, kn;
    bool accumulate;  // C += A @ B, else C = A @ B
};

// M rows x NV vectors of one panel. ACC: C += A @ B (else C = A @ B). GATED: each vector has
// its own A (per gate block). FULL: every vector of the panel has L real lanes (else some are
// partial or padding).
template <class S, typename T, int M, int NV, bool ACC, bool GATED, bool FULL>
inline void micro_tile(const PanelGemm<T>& g, idx_t r, idx_t p) {
    typedef typename S::V V;
    constexpr int L = S::L;
    const VecCols* vc = g.B->cols.data() + p * NV;
    const T* P = g.B->panel(p) + g.k0 * NV * L;
    const T* A[M][GATED ? NV : 1];
    for (int m = 0; m < M; ++m)
        for (int v = 0; v < (GATED ? NV : 1); ++v)
            A[m][v] = g.A + (r + m) * g.lda + g.k0 + (GATED ? vc[v].gate * g.a_gate : 0);
    V acc[M][NV];
    for (int m = 0; m < M; ++m)
        for (int v = 0; v < NV; ++v) {
            const T* c = g.C + (r + m) * g.ldc + vc[v].col;
            acc[m][v] = !ACC ? S::zero() : FULL ? S::load(c) : S::load_n(c, vc[v].lanes);
        }
    idx_t k = 0;
    do {  // kn >= 1 (U >= 1): no zero-trip path to keep the accumulators in memory for
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
    } while (++k < g.kn);
    for (int m = 0; m < M; ++m)
        for (int v = 0; v < NV; ++v) {
            T* c = g.C + (r + m) * g.ldc + vc[v].col;
            if (FULL)
                S::store(c, acc[m][v]);
            else
                S::store_n(c, acc[m][v], vc[v].lanes);
        }
}

template <class S, typename T, int NV, bool ACC, bool GATED, bool FULL, int M>
inline void tile_rows(const PanelGemm<T>& g, idx_t r, idx_t m, idx_t p) {
    if constexpr (M > 1) {
        if (m < M) return tile_rows<S, T, NV, ACC, GATED, FULL, M - 1>(g, r, m, p);
    }
    micro_tile<S, T, M, NV, ACC, GATED, FULL>(g, r, p);
}

template <class S, typename T, int NV, int MR, bool ACC, bool GATED>
inline void panel_rows(const PanelGemm<T>& g, idx_t r0, idx_t r1, idx_t p) {
    const bool full = g.B->full[(size_t)p] != 0;
    for (idx_t r = r0; r < r1; r += MR) {
        const idx_t m = std::min<idx_t>(MR, r1 - r);
        if (full)
            tile_rows<S, T, NV, ACC, GATED, true, MR>(g, r, m, p);
        else
            tile_rows<S, T, NV, ACC, GATED, false, MR>(g, r, m, p);
    }
}

// Panels outer (each stays in L1/L2 while every row block of [r0, r1) passes over it).
template <class S, typename T, int NV, int MR>
inline void panel_gemm(const PanelGemm<T>& g, idx_t r0, idx_t r1, idx_t p0, idx_t p1) {
    for (idx_t p = p0; p < p1; ++p) {
        if (!g.accumulate)  // the backward product
            panel_rows<S, T, NV, MR, false, false>(g, r0, r1, p);
        else if (g.a_gate != 0)  // forward, recurrent dropout
            panel_rows<S, T, NV, MR, true, true>(g, r0, r1, p);
        else
            panel_rows<S, T, NV, MR, true, false>(g, r0, r1, p);
    }
}

}  // namespace lstm_cpu
