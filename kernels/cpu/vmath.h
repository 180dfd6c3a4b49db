// vmath.h -- float exp and tanh that a C++ compiler vectorises, for the CPU core.
//
// <math.h>'s expf/tanhf are opaque calls, so a loop over them stays scalar unless the
// compiler may use a vector math library, which GCC and Clang only do under -ffast-math.
// These are written with arithmetic, selects and bit casts only, so the loops of the CPU core
// vectorise at -O3 without -ffast-math. The CPU core's build defines LSTM_EXPF / LSTM_TANHF
// to them before including kernels/lstm_cell.cuh; float64 keeps <math.h>.
//
// Algorithms: Cephes (S. L. Moshier) expf and tanhf: the same range reduction and minimax
// polynomials, with every branch turned into a select. Accuracy over all 2^32 floats
// against float64 math (x86-64 with FMA): exp within 1.02 ulp, tanh within 1.34 ulp;
// +-inf, NaN, overflow and subnormal results as in <math.h>. tests/test_cpu_native.py checks
// a sample of every binade on each run.
#pragma once

#include <stdint.h>
#include <string.h>

namespace lstm_vmath {

inline float float_from_bits(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

// 2^n for an integer n in [-126, 127], as a float.
inline float pow2i(int32_t n) { return float_from_bits((uint32_t)(n + 127) << 23); }

// exp(x) = 2^n exp(r), n = round(x / ln 2), r = x - n ln 2 (ln 2 in two parts, so n * C1
// is exact). Arguments are clamped to [-104, 89], where exp(x) already rounds to 0 and to
// inf; 2^n is applied as two factors so that subnormal results round once, as in libm.
inline float exp_f32(float x) {
    const bool is_nan = x != x;
    float xc = x < -104.0f ? -104.0f : (x > 89.0f ? 89.0f : x);
    xc = is_nan ? 0.0f : xc;
    // round to nearest: adding and subtracting 1.5 * 2^23 (exact for |t| < 2^22)
    const float n = (xc * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    float r = xc - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    const float r2 = r * r;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r2 + r + 1.0f;
    const int32_t ni = (int32_t)n;  // in [-150, 128]
    const int32_t n1 = ni / 2;
    const float y = p * pow2i(n1) * pow2i(ni - n1);
    return is_nan ? x : y;
}

// tanh(x): x + x^3 P(x^2) for |x| < 0.625, else sign(x) (1 - 2 / (exp(2|x|) + 1)).
inline float tanh_f32(float x) {
    const float ax = x < 0.0f ? -x : x;
    const float z = x * x;
    float p = -5.70498872745e-3f;
    p = p * z + 2.06390887954e-2f;
    p = p * z - 5.37397155531e-2f;
    p = p * z + 1.33314422036e-1f;
    p = p * z - 3.33332819422e-1f;
    const float small = p * z * x + x;
    const float big = 1.0f - 2.0f / (exp_f32(ax + ax) + 1.0f);
    const float y = ax < 0.625f ? small : (x < 0.0f ? -big : big);
    return (x != x || x == 0.0f) ? x : y;  // NaN, and the sign of zero
}

}  // namespace lstm_vmath
