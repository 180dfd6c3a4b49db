// vmath_avx512.h -- vmath.h's float exp, sigmoid and tanh on 16 lanes, with AVX-512.
//
// The element passes apply an activation to a run of elements at a time (lstm_cpu_loops.hpp,
// act_run). Compiled from vmath.h's scalar code, GCC's vectoriser builds 2^n from integer
// shifts in two factors and masks every NaN and range test: about 45 instructions per
// vector for sigmoid and 60 for tanh. AVX-512 has the two steps exp needs as instructions,
// vrndscaleps (round to nearest) and vscalefps (p * 2^n, rounded once, overflow to inf and
// gradual underflow as a multiplication would), so the same algorithm is about 16 and 30.
//
// Same algorithm and constants as vmath.h (Cephes), the same operations in the same order
// (the FMAs are the ones GCC contracts vmath.h's expressions into), so the results are those
// of vmath.h's functions on an FMA machine: exp within 1.02 ulp, tanh within 1.34 ulp; inf,
// NaN, overflow and subnormal results as in <math.h>. tests/test_cpu_native.py checks the
// activations at every ISA level the CPU runs.
//
// Only x86-64 with GCC or Clang; the functions carry their own target attribute and are
// inlined into the AVX-512 variant of the element passes (lstm_cpu_module.cpp).
#pragma once

#if (defined(__x86_64__) || defined(_M_X64)) && (defined(__GNUC__) || defined(__clang__))
#define LSTM_VMATH_AVX512 1
// GCC 12 warns about its own intrinsics (min, max, roundscale, scalef start from an undefined
// vector that the instruction overwrites) wherever they are inlined; the warning's location
// is the header's, hence the pragma around its inclusion.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

#include "../lstm_cell.cuh"

#define LSTM_TARGET_AVX512 \
    __attribute__((target("avx512f,avx512vl,avx512bw,avx512dq,avx2,fma,bmi,bmi2")))

namespace lstm_vmath {
namespace avx512 {

LSTM_TARGET_AVX512 inline __m512 splat(float x) { return _mm512_set1_ps(x); }

// exp_f32 of vmath.h. The clamp keeps r finite at +-inf (min/max pass NaN through); outside
// [-104, 89] exp rounds to 0 and to inf anyway.
LSTM_TARGET_AVX512 inline __m512 exp(__m512 x) {
    const __m512 xc = _mm512_max_ps(splat(-104.0f), _mm512_min_ps(splat(89.0f), x));
    const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(xc, splat(1.44269504088896341f)),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, splat(0.693359375f), xc);
    r = _mm512_fnmadd_ps(n, splat(-2.12194440e-4f), r);
    const __m512 r2 = _mm512_mul_ps(r, r);
    __m512 p = splat(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, splat(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, splat(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, splat(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, splat(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, splat(5.0000001201e-1f));
    p = _mm512_add_ps(_mm512_fmadd_ps(p, r2, r), splat(1.0f));
    return _mm512_scalef_ps(p, n);
}

// lstm::sigmoid with this exp: 1 / (1 + exp(-x)).
LSTM_TARGET_AVX512 inline __m512 sigmoid(__m512 x) {
    const __m512 one = splat(1.0f);
    const __m512 e = exp(_mm512_xor_ps(x, splat(-0.0f)));
    return _mm512_div_ps(one, _mm512_add_ps(one, e));
}

// tanh_f32 of vmath.h: x + x^3 P(x^2) for |x| < 0.625, else sign(x) (1 - 2 / (exp(2|x|) + 1)).
LSTM_TARGET_AVX512 inline __m512 tanh(__m512 x) {
    const __m512 sign = splat(-0.0f), one = splat(1.0f);
    const __m512 ax = _mm512_andnot_ps(sign, x);
    const __m512 z = _mm512_mul_ps(x, x);
    __m512 p = splat(-5.70498872745e-3f);
    p = _mm512_fmadd_ps(p, z, splat(2.06390887954e-2f));
    p = _mm512_fmadd_ps(p, z, splat(-5.37397155531e-2f));
    p = _mm512_fmadd_ps(p, z, splat(1.33314422036e-1f));
    p = _mm512_fmadd_ps(p, z, splat(-3.33332819422e-1f));
    const __m512 small = _mm512_fmadd_ps(_mm512_mul_ps(p, z), x, x);
    const __m512 e = exp(_mm512_add_ps(ax, ax));
    const __m512 big = _mm512_sub_ps(one, _mm512_div_ps(splat(2.0f), _mm512_add_ps(e, one)));
    const __m512 signed_big = _mm512_or_ps(big, _mm512_and_ps(x, sign));
    const __mmask16 is_small = _mm512_cmp_ps_mask(ax, splat(0.625f), _CMP_LT_OQ);
    // x itself for NaN and for +-0 (the formula loses the sign of -0): "equal or unordered"
    const __mmask16 is_x = _mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_EQ_UQ);
    return _mm512_mask_blend_ps(is_x, _mm512_mask_blend_ps(is_small, signed_big, small), x);
}

// y[0, n) = F(x[0, n)), the last partial vector through masked loads and stores.
template <__m512 (*F)(__m512)>
LSTM_TARGET_AVX512 inline void run(const float* x, float* y, long long n) {
    long long i = 0;
    for (; i + 16 <= n; i += 16) _mm512_storeu_ps(y + i, F(_mm512_loadu_ps(x + i)));
    if (i < n) {
        const __mmask16 m = (__mmask16)((1u << (n - i)) - 1u);
        _mm512_mask_storeu_ps(y + i, m, F(_mm512_maskz_loadu_ps(m, x + i)));
    }
}

}  // namespace avx512

// The vector math of the AVX-512 element passes: float tanh and sigmoid. run() returns
// whether it applied ACT to x; if not, the caller's loop does (vmath.h's scalar functions).
struct Avx512Math {
    template <typename T, int ACT>
    LSTM_TARGET_AVX512 static bool run(const T* x, T* y, long long n) {
        if constexpr (sizeof(T) == 4 && ACT == lstm::ACT_TANH) {
            avx512::run<avx512::tanh>(x, y, n);
            return true;
        } else if constexpr (sizeof(T) == 4 && ACT == lstm::ACT_SIGMOID) {
            avx512::run<avx512::sigmoid>(x, y, n);
            return true;
        }
        return false;
    }
};

}  // namespace lstm_vmath
#endif
