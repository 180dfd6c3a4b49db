// lstm_cpu_module.cpp -- lstm_gpu._cpu_core: the CPU core as a CPython extension.
//
// A plain C-API module (no binding generator, no NumPy headers): arrays arrive through the
// buffer protocol, are checked here (dtype, contiguity, shape: a ValueError naming the
// argument, never a crash) and the time loops run with the GIL released. BLAS arrives as
// cblas function pointers through set_blas() (lstm_gpu/paths/cpu_native.py takes them from
// the scipy-openblas32 wheel), so the build needs no BLAS. The element passes and the
// per-step products on packed weights (packed_gemm.hpp) are compiled for AVX-512, AVX2+FMA
// and the baseline of the target, and the best one this CPU runs is picked when the module
// loads.
//
// Python API (all arrays C-contiguous; float32 or float64 throughout one call):
//   set_blas(sgemm_address, dgemm_address)
//   forward(x, W, R, bias|None, h0, c0, mask|None, mx|None, mr|None, act, ract, zero_output,
//           threads, seq, h, c, Z|None, HS|None, CS|None)
//   backward(x, W, R, h0, c0, mask|None, mx|None, mr|None, act, ract, zero_output, threads,
//            Z, HS, CS, d_last|None, d_seq|None, d_h|None, d_c|None,
//            dZ|None, dx, dh0, dc0, dW, dR, dbias|None)
// Z (forward) and dZ (backward) may be None: the core then uses a scratch buffer of the
// calling thread, kept for its next call (fresh pages from the allocator on every call cost
// several percent at large shapes: the kernel zeroes them); forward's is one step's (B, 4U).
//   act_fn(act, x, y), act_grad(act, x, y, dy)     (the activations, for the tests)
//   isa() -> "avx512" | "avx2" | "baseline"
//   set_isa(name | None) -> previous name           (a lower ISA's code, for the tests;
//                                                    None: the best this CPU runs)
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <atomic>
#include <climits>
#include <cstring>
#include <new>
#include <string>

#include "lstm_cpu_loops.hpp"
#include "thread_pool.hpp"
#include "vmath_avx512.h"

namespace lstm_cpu {
namespace {

// ------------------------------------------------------------------------------- ISA variants
#if (defined(__x86_64__) || defined(_M_X64)) && (defined(__GNUC__) || defined(__clang__))
#define LSTM_CPU_X86 1
#define LSTM_ATTR_AVX512 \
    __attribute__((target("avx512f,avx512vl,avx512bw,avx512dq,avx2,fma,bmi,bmi2"), flatten))
#define LSTM_ATTR_AVX2 __attribute__((target("avx2,fma,bmi,bmi2"), flatten))
#endif
#if defined(__GNUC__) || defined(__clang__)
#define LSTM_ATTR_BASE __attribute__((flatten))
#else
#define LSTM_ATTR_BASE
#endif

// Code per instruction set: the element passes and the packed per-step product, whose
// panels are NV vectors of BYTES bytes wide and whose tiles are MR rows (MR x NV accumulators
// plus NV panel vectors and a broadcast fill the ISA's registers: 32 for AVX-512, 16 for
// AVX2 and SSE2). Only the float passes with (tanh, sigmoid) known at compile time vectorise
// (the common case), so only they are compiled per ISA; float64 (which calls <math.h>) and
// other activation pairs (a switch on the runtime ids per element) run the baseline build.
// The product is compiled per ISA for both float types. The activations alone (act_fn /
// act_grad, for the tests) follow the float passes.
#define LSTM_DEFINE_ISA(NS, ATTR, VM, BYTES, NV_, MR_)                                       \
    namespace NS {                                                                           \
    constexpr int NV = NV_, MR = MR_;                                                        \
    template <typename T> constexpr Geometry geometry() {                                    \
        return Geometry{Simd<T, BYTES>::L, NV, MR};                                          \
    }                                                                                        \
    template <typename T, int A, int RA>                                                     \
    ATTR void fwd(const FwdRows<T>& p, idx_t b0, idx_t b1) {                                 \
        fwd_rows_body<T, A, RA, VM>(p, b0, b1);                                              \
    }                                                                                        \
    template <typename T, int A, int RA, bool REC>                                           \
    ATTR void bwd(const BwdRows<T>& p, idx_t b0, idx_t b1) {                                 \
        bwd_rows_body<T, A, RA, VM, REC>(p, b0, b1);                                         \
    }                                                                                        \
    template <typename T>                                                                    \
    ATTR void gemm(const PanelGemm<T>& g, idx_t r0, idx_t r1, idx_t p0, idx_t p1) {          \
        panel_gemm<Simd<T, BYTES>, T, NV, MR>(g, r0, r1, p0, p1);                            \
    }                                                                                        \
    template <typename T> ATTR void act_fn_n(int act, const T* x, T* y, idx_t n) {           \
        if (act == lstm::ACT_TANH) return act_run<T, lstm::ACT_TANH, VM>(act, x, y, n);      \
        if (act == lstm::ACT_SIGMOID) return act_run<T, lstm::ACT_SIGMOID, VM>(act, x, y, n); \
        act_run<T, lstm::ACT_DYNAMIC, VM>(act, x, y, n);                                     \
    }                                                                                        \
    template <typename T>                                                                    \
    ATTR void act_grad_n(int act, const T* x, const T* y, T* dy, idx_t n) {                  \
        for (idx_t i = 0; i < n; ++i) dy[i] = lstm::act_grad<T>(act, x[i], y[i]);            \
    }                                                                                        \
    }

LSTM_DEFINE_ISA(isa_base, LSTM_ATTR_BASE, ScalarMath, 16, 2, 4)
#ifdef LSTM_CPU_X86
LSTM_DEFINE_ISA(isa_avx2, LSTM_ATTR_AVX2, ScalarMath, 32, 2, 6)
LSTM_DEFINE_ISA(isa_avx512, LSTM_ATTR_AVX512, lstm_vmath::Avx512Math, 64, 4, 6)
#endif

enum Isa { ISA_BASE, ISA_AVX2, ISA_AVX512, ISA_COUNT };
const char* const kIsaNames[] = {"baseline", "avx2", "avx512"};

Isa detect_isa() {
#ifdef LSTM_CPU_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
        __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq"))
        return ISA_AVX512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return ISA_AVX2;
#endif
    return ISA_BASE;
}

// The best ISA this CPU runs, and the one in use (set_isa() may lower it, for the tests).
const Isa g_max_isa = detect_isa();
std::atomic<int> g_isa{g_max_isa};

#define LSTM_KERNELS(NS, T, A, RA)                                                          \
    Kernels<T> {                                                                             \
        &NS::fwd<T, A, RA>, &NS::bwd<T, A, RA, false>, &NS::bwd<T, A, RA, true>,             \
            &NS::gemm<T>, NS::geometry<T>()                                                  \
    }

// An ISA variant's product, and its element passes where they vectorise (float, tanh and
// sigmoid); the baseline's passes otherwise.
#define LSTM_TAKE_ISA(NS)                                                                    \
    do {                                                                                     \
        if constexpr (sizeof(T) == 4) {                                                      \
            if (tanh_sigmoid) k = LSTM_KERNELS(NS, T, TANH, SIGM);                           \
        }                                                                                    \
        k.gemm = &NS::gemm<T>;                                                               \
        k.geometry = NS::geometry<T>();                                                      \
    } while (0)

template <typename T> Kernels<T> kernels_of(Isa isa, bool tanh_sigmoid) {
    constexpr int TANH = lstm::ACT_TANH, SIGM = lstm::ACT_SIGMOID, DYN = lstm::ACT_DYNAMIC;
    Kernels<T> k = tanh_sigmoid ? LSTM_KERNELS(isa_base, T, TANH, SIGM)
                                : LSTM_KERNELS(isa_base, T, DYN, DYN);
#ifdef LSTM_CPU_X86
    if (isa == ISA_AVX512) LSTM_TAKE_ISA(isa_avx512);
    if (isa == ISA_AVX2) LSTM_TAKE_ISA(isa_avx2);
#else
    (void)isa;
#endif
    return k;
}

template <typename T> Kernels<T> kernels(bool tanh_sigmoid) {
    return kernels_of<T>((Isa)g_isa.load(), tanh_sigmoid);
}

template <typename T> void act_fn_n(int act, const T* x, T* y, idx_t n) {
#ifdef LSTM_CPU_X86
    if constexpr (sizeof(T) == 4) {
        if (g_isa == ISA_AVX512) return isa_avx512::act_fn_n<T>(act, x, y, n);
        if (g_isa == ISA_AVX2) return isa_avx2::act_fn_n<T>(act, x, y, n);
    }
#endif
    isa_base::act_fn_n<T>(act, x, y, n);
}

template <typename T> void act_grad_n(int act, const T* x, const T* y, T* dy, idx_t n) {
#ifdef LSTM_CPU_X86
    if constexpr (sizeof(T) == 4) {
        if (g_isa == ISA_AVX512) return isa_avx512::act_grad_n<T>(act, x, y, dy, n);
        if (g_isa == ISA_AVX2) return isa_avx2::act_grad_n<T>(act, x, y, dy, n);
    }
#endif
    isa_base::act_grad_n<T>(act, x, y, dy, n);
}

Blas g_blas;
ThreadPool* g_pool = new ThreadPool();  // never freed: see thread_pool.hpp

void parallel(int n, const std::function<void(int)>& fn) { g_pool->run(n, fn); }

// `given`, or the calling thread's scratch buffer of n elements.
template <typename T> T* or_scratch(T* given, idx_t n) {
    if (given != nullptr) return given;
    static thread_local std::vector<T> scratch;
    if (scratch.size() < (size_t)n) {
        scratch.clear();
        scratch.shrink_to_fit();
        scratch.resize((size_t)n);
    }
    return scratch.data();
}

// ------------------------------------------------------------------------------- buffers
// A buffer-protocol view, released on scope exit.
class View {
  public:
    View() { buf_.obj = nullptr; }
    ~View() {
        if (buf_.obj != nullptr) PyBuffer_Release(&buf_);
    }
    View(const View&) = delete;
    View& operator=(const View&) = delete;

    // Acquire `obj` as argument `name`; None allowed when `optional`.
    bool get(PyObject* obj, const char* name, bool writable, bool optional) {
        name_ = name;
        if (obj == Py_None) {
            if (optional) return true;
            PyErr_Format(PyExc_TypeError, "argument `%s` must be an array, not None", name);
            return false;
        }
        int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
        if (PyObject_GetBuffer(obj, &buf_, flags) != 0) {
            PyErr_Clear();
            PyErr_Format(PyExc_ValueError,
                         "argument `%s` must be a C-contiguous%s array; got %.100s", name,
                         writable ? ", writable" : "", Py_TYPE(obj)->tp_name);
            buf_.obj = nullptr;
            return false;
        }
        return true;
    }

    bool present() const { return buf_.obj != nullptr; }
    void* data() const { return present() ? buf_.buf : nullptr; }

    // Check the element type (struct format char, itemsize) and the shape.
    bool check(char kind, Py_ssize_t itemsize, std::initializer_list<idx_t> shape) {
        if (!present()) return true;
        const char* f = buf_.format ? buf_.format : "B";
        if (*f == '<' || *f == '=' || *f == '@') ++f;
        if (buf_.itemsize != itemsize || !format_ok(*f, kind)) {
            PyErr_Format(PyExc_ValueError, "argument `%s` has element format '%s' (itemsize "
                         "%zd); expected %s", name_, buf_.format ? buf_.format : "B",
                         buf_.itemsize, kind_name(kind, itemsize));
            return false;
        }
        bool same = (size_t)buf_.ndim == shape.size();
        size_t i = 0;
        for (idx_t s : shape) {
            if (same && buf_.shape[i] != s) same = false;
            ++i;
        }
        if (!same) {
            std::string want, got;
            for (idx_t s : shape) want += (want.empty() ? "" : ", ") + std::to_string(s);
            for (int d = 0; d < buf_.ndim; ++d)
                got += (d ? ", " : "") + std::to_string((long long)buf_.shape[d]);
            PyErr_Format(PyExc_ValueError, "argument `%s` has shape (%s); expected (%s)", name_,
                         got.c_str(), want.c_str());
            return false;
        }
        return true;
    }

    Py_ssize_t dim(int d) const { return d < buf_.ndim ? buf_.shape[d] : -1; }
    Py_ssize_t itemsize() const { return buf_.itemsize; }
    int ndim() const { return buf_.ndim; }

  private:
    static bool format_ok(char f, char kind) {
        if (kind == 'f') return f == 'f' || f == 'd';
        return f == '?' || f == 'B' || f == 'b';  // masks: bool or (u)int8
    }
    static const char* kind_name(char kind, Py_ssize_t itemsize) {
        if (kind != 'f') return "a bool or uint8 array";
        return itemsize == 4 ? "float32 (like x)" : "float64 (like x)";
    }

    Py_buffer buf_;
    const char* name_ = "";
};

bool as_int(PyObject* o, const char* name, long* out) {
    *out = PyLong_AsLong(o);
    if (*out == -1 && PyErr_Occurred()) {
        PyErr_Format(PyExc_TypeError, "argument `%s` must be an int", name);
        return false;
    }
    return true;
}

bool check_nargs(Py_ssize_t nargs, Py_ssize_t want, const char* fn) {
    if (nargs == want) return true;
    PyErr_Format(PyExc_TypeError, "%s() takes %zd arguments (%zd given)", fn, want, nargs);
    return false;
}

// The common arguments of forward and backward: x, W, R, h0, c0, mask, mx, mr, act, ract,
// zero_output, threads, in the order of the Python API after x.
struct Common {
    View x, W, R, h0, c0, mask, mx, mr;
    long act = 0, ract = 0, zero_output = 0, threads = 1;
    idx_t T_ = 0, B = 0, F = 0, U = 0;
    Py_ssize_t itemsize = 0;

    // args: x, W, R, h0, c0, mask, mx, mr, act, ract, zero_output, threads
    bool parse(PyObject* const* a) {
        if (!x.get(a[0], "x", false, false) || !W.get(a[1], "W", false, false) ||
            !R.get(a[2], "R", false, false) || !h0.get(a[3], "h0", false, false) ||
            !c0.get(a[4], "c0", false, false) || !mask.get(a[5], "mask", false, true) ||
            !mx.get(a[6], "mx", false, true) || !mr.get(a[7], "mr", false, true) ||
            !as_int(a[8], "act", &act) || !as_int(a[9], "ract", &ract) ||
            !as_int(a[10], "zero_output", &zero_output) || !as_int(a[11], "threads", &threads))
            return false;
        if (x.ndim() != 3 || R.ndim() != 2) {
            PyErr_SetString(PyExc_ValueError, "x must be (T, B, F) and R (U, 4U)");
            return false;
        }
        T_ = x.dim(0);
        B = x.dim(1);
        F = x.dim(2);
        U = R.dim(0);
        itemsize = x.itemsize() == 4 ? 4 : 8;
        if (!x.check('f', itemsize, {T_, B, F})) return false;
        if (act < 0 || act >= lstm::ACT_COUNT || ract < 0 || ract >= lstm::ACT_COUNT) {
            PyErr_Format(PyExc_ValueError, "activation ids must be in [0, %d); got %ld, %ld",
                         (int)lstm::ACT_COUNT, act, ract);
            return false;
        }
        if (threads < 1) threads = 1;
        const idx_t rows = T_ * B;
        if (rows >= INT_MAX || 4 * U >= INT_MAX || F >= INT_MAX || rows * F / (F ? F : 1) != rows) {
            PyErr_SetString(PyExc_ValueError, "problem too large for 32-bit BLAS dimensions");
            return false;
        }
        long g = mx.present() ? mx.dim(0) : 1;
        if (mx.present() && g != 1 && g != 4) {
            PyErr_Format(PyExc_ValueError, "argument `mx` must be (1 or 4, B, F); got %ld gates",
                         g);
            return false;
        }
        return W.check('f', itemsize, {F, 4 * U}) && R.check('f', itemsize, {U, 4 * U}) &&
               h0.check('f', itemsize, {B, U}) && c0.check('f', itemsize, {B, U}) &&
               mask.check('m', 1, {T_, B}) && mx.check('f', itemsize, {g, B, F}) &&
               mr.check('f', itemsize, {4, B, U});
    }

    template <typename T> Problem<T> problem(const T* bias) const {
        Problem<T> P;
        P.x = (const T*)x.data();
        P.T_ = T_;
        P.B = B;
        P.F = F;
        P.U = U;
        P.W = (const T*)W.data();
        P.R = (const T*)R.data();
        P.bias = bias;
        P.h0 = (const T*)h0.data();
        P.c0 = (const T*)c0.data();
        P.mask = (const unsigned char*)mask.data();
        P.mx = (const T*)mx.data();
        P.mx_gates = mx.present() ? (int)mx.dim(0) : 0;
        P.mr = (const T*)mr.data();
        P.act = (int)act;
        P.ract = (int)ract;
        P.zero_output = zero_output != 0;
        return P;
    }

    bool tanh_sigmoid() const { return act == lstm::ACT_TANH && ract == lstm::ACT_SIGMOID; }
};

bool blas_ready(Py_ssize_t itemsize) {
    if ((itemsize == 4 ? (void*)g_blas.sgemm : (void*)g_blas.dgemm) != nullptr) return true;
    PyErr_SetString(PyExc_RuntimeError, "no BLAS: call set_blas() first");
    return false;
}

// Runs fn with the GIL released; C++ exceptions (allocation failures) become Python ones.
template <typename F> bool run_released(F fn) {
    bool ok = true;
    Py_BEGIN_ALLOW_THREADS
    try {
        fn();
    } catch (const std::bad_alloc&) {
        ok = false;
    }
    Py_END_ALLOW_THREADS
    if (!ok) PyErr_NoMemory();
    return ok;
}

PyObject* py_set_blas(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
    if (!check_nargs(nargs, 2, "set_blas")) return nullptr;
    void* s = PyLong_AsVoidPtr(args[0]);
    void* d = PyLong_AsVoidPtr(args[1]);
    if (PyErr_Occurred()) return nullptr;
    if (s == nullptr || d == nullptr) {
        PyErr_SetString(PyExc_ValueError, "set_blas() needs two non-null function addresses");
        return nullptr;
    }
    g_blas.sgemm = (sgemm_fn)s;
    g_blas.dgemm = (dgemm_fn)d;
    Py_RETURN_NONE;
}

template <typename T> void run_forward(const Common& c, const View& bias, const View& seq,
                                       const View& h, const View& cc, const View& Z,
                                       const View& HS, const View& CS) {
    const Problem<T> P = c.problem<T>((const T*)bias.data());
    ForwardOut<T> out;
    out.seq = (T*)seq.data();
    out.h = (T*)h.data();
    out.c = (T*)cc.data();
    out.Z = or_scratch<T>((T*)Z.data(), c.B * 4 * c.U);
    out.z_step = Z.present() ? c.B * 4 * c.U : 0;
    out.HS = (T*)HS.data();
    out.CS = (T*)CS.data();
    forward<T>(kernels<T>(c.tanh_sigmoid()), parallel, (int)c.threads, P, out);
}

PyObject* py_forward(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
    if (!check_nargs(nargs, 19, "forward")) return nullptr;
    // x, W, R, bias, h0, c0, mask, mx, mr, act, ract, zero_output, threads, seq, h, c, Z, HS, CS
    PyObject* const common_args[] = {args[0], args[1], args[2], args[4], args[5], args[6],
                                     args[7], args[8], args[9], args[10], args[11], args[12]};
    Common c;
    View bias, seq, h, cc, Z, HS, CS;
    if (!c.parse(common_args) || !bias.get(args[3], "bias", false, true) ||
        !seq.get(args[13], "seq", true, false) || !h.get(args[14], "h", true, false) ||
        !cc.get(args[15], "c", true, false) || !Z.get(args[16], "Z", true, true) ||
        !HS.get(args[17], "HS", true, true) || !CS.get(args[18], "CS", true, true))
        return nullptr;
    const Py_ssize_t w = c.itemsize;
    const idx_t T_ = c.T_, B = c.B, U = c.U;
    if (!bias.check('f', w, {4 * U}) || !seq.check('f', w, {T_, B, U}) ||
        !h.check('f', w, {B, U}) || !cc.check('f', w, {B, U}) ||
        !Z.check('f', w, {T_, B, 4 * U}) || !HS.check('f', w, {T_, B, U}) ||
        !CS.check('f', w, {T_, B, U}) || !blas_ready(w))
        return nullptr;
    if (HS.present() != CS.present()) {
        PyErr_SetString(PyExc_ValueError, "HS and CS are saved together (training) or not");
        return nullptr;
    }
    const bool ok = run_released([&] {
        if (w == 4)
            run_forward<float>(c, bias, seq, h, cc, Z, HS, CS);
        else
            run_forward<double>(c, bias, seq, h, cc, Z, HS, CS);
    });
    if (!ok) return nullptr;
    Py_RETURN_NONE;
}

template <typename T> void run_backward(const Common& c, View* v) {
    // v: Z, HS, CS, d_last, d_seq, d_h, d_c, dZ, dx, dh0, dc0, dW, dR, dbias
    const Problem<T> P = c.problem<T>(nullptr);
    BackwardIO<T> io;
    io.Z = (const T*)v[0].data();
    io.HS = (const T*)v[1].data();
    io.CS = (const T*)v[2].data();
    io.d_last = (const T*)v[3].data();
    io.d_seq = (const T*)v[4].data();
    io.d_h = (const T*)v[5].data();
    io.d_c = (const T*)v[6].data();
    io.dZ = or_scratch<T>((T*)v[7].data(), c.T_ * c.B * 4 * c.U);
    io.dx = (T*)v[8].data();
    io.dh0 = (T*)v[9].data();
    io.dc0 = (T*)v[10].data();
    io.dW = (T*)v[11].data();
    io.dR = (T*)v[12].data();
    io.dbias = (T*)v[13].data();
    backward<T>(g_blas, kernels<T>(c.tanh_sigmoid()), parallel, (int)c.threads, P, io);
}

PyObject* py_backward(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
    if (!check_nargs(nargs, 26, "backward")) return nullptr;
    Common c;
    if (!c.parse(args)) return nullptr;
    static const char* const names[] = {"Z", "HS", "CS", "d_last", "d_seq", "d_h", "d_c",
                                        "dZ", "dx", "dh0", "dc0", "dW", "dR", "dbias"};
    const bool writable[] = {false, false, false, false, false, false, false,
                             true, true, true, true, true, true, true};
    const bool optional[] = {false, false, false, true, true, true, true,
                             true, false, false, false, false, false, true};
    View v[14];
    for (int i = 0; i < 14; ++i)
        if (!v[i].get(args[12 + i], names[i], writable[i], optional[i])) return nullptr;
    const Py_ssize_t w = c.itemsize;
    const idx_t T_ = c.T_, B = c.B, U = c.U, F = c.F;
    if (!v[0].check('f', w, {T_, B, 4 * U}) || !v[1].check('f', w, {T_, B, U}) ||
        !v[2].check('f', w, {T_, B, U}) || !v[3].check('f', w, {B, U}) ||
        !v[4].check('f', w, {T_, B, U}) || !v[5].check('f', w, {B, U}) ||
        !v[6].check('f', w, {B, U}) || !v[7].check('f', w, {T_, B, 4 * U}) ||
        !v[8].check('f', w, {T_, B, F}) || !v[9].check('f', w, {B, U}) ||
        !v[10].check('f', w, {B, U}) || !v[11].check('f', w, {F, 4 * U}) ||
        !v[12].check('f', w, {U, 4 * U}) || !v[13].check('f', w, {4 * U}) || !blas_ready(w))
        return nullptr;
    const bool ok = run_released([&] {
        if (w == 4)
            run_backward<float>(c, v);
        else
            run_backward<double>(c, v);
    });
    if (!ok) return nullptr;
    Py_RETURN_NONE;
}

// act_fn(act, x, y) / act_grad(act, x, y, dy): 1-D float arrays of one dtype.
PyObject* py_act(PyObject*, PyObject* const* args, Py_ssize_t nargs, bool grad) {
    if (!check_nargs(nargs, grad ? 4 : 3, grad ? "act_grad" : "act_fn")) return nullptr;
    long act;
    View x, y, dy;
    if (!as_int(args[0], "act", &act) || !x.get(args[1], "x", false, false) ||
        !y.get(args[2], "y", !grad, false) || (grad && !dy.get(args[3], "dy", true, false)))
        return nullptr;
    if (act < 0 || act >= lstm::ACT_COUNT) {
        PyErr_Format(PyExc_ValueError, "activation id %ld is not in [0, %d)", act,
                     (int)lstm::ACT_COUNT);
        return nullptr;
    }
    const idx_t n = x.ndim() == 1 ? x.dim(0) : -1;
    const Py_ssize_t w = x.itemsize() == 4 ? 4 : 8;
    if (!x.check('f', w, {n}) || !y.check('f', w, {n}) || (grad && !dy.check('f', w, {n})))
        return nullptr;
    if (w == 4) {
        if (grad)
            act_grad_n<float>((int)act, (const float*)x.data(), (const float*)y.data(),
                              (float*)dy.data(), n);
        else
            act_fn_n<float>((int)act, (const float*)x.data(), (float*)y.data(), n);
    } else {
        if (grad)
            act_grad_n<double>((int)act, (const double*)x.data(), (const double*)y.data(),
                               (double*)dy.data(), n);
        else
            act_fn_n<double>((int)act, (const double*)x.data(), (double*)y.data(), n);
    }
    Py_RETURN_NONE;
}

PyObject* py_act_fn(PyObject* m, PyObject* const* a, Py_ssize_t n) { return py_act(m, a, n, false); }
PyObject* py_act_grad(PyObject* m, PyObject* const* a, Py_ssize_t n) { return py_act(m, a, n, true); }

PyObject* py_isa(PyObject*, PyObject*) { return PyUnicode_FromString(kIsaNames[g_isa]); }

PyObject* py_set_isa(PyObject*, PyObject* arg) {
    if (arg == Py_None) return PyUnicode_FromString(kIsaNames[g_isa.exchange(g_max_isa)]);
    const char* name = PyUnicode_Check(arg) ? PyUnicode_AsUTF8(arg) : nullptr;
    if (name == nullptr) {
        PyErr_Clear();
        PyErr_Format(PyExc_TypeError, "set_isa() takes an ISA name (str) or None; got %.100s",
                     Py_TYPE(arg)->tp_name);
        return nullptr;
    }
    for (int i = 0; i < ISA_COUNT; ++i) {
        if (strcmp(name, kIsaNames[i]) != 0) continue;
        if (i > g_max_isa) {
            PyErr_Format(PyExc_ValueError, "this CPU does not run '%s' (its best is '%s')",
                         name, kIsaNames[g_max_isa]);
            return nullptr;
        }
        return PyUnicode_FromString(kIsaNames[g_isa.exchange(i)]);
    }
    PyErr_Format(PyExc_ValueError, "unknown ISA '%s' (one of baseline, avx2, avx512)", name);
    return nullptr;
}

PyMethodDef methods[] = {
    {"set_blas", (PyCFunction)(void (*)(void))py_set_blas, METH_FASTCALL,
     "set_blas(sgemm_address, dgemm_address): the cblas_sgemm / cblas_dgemm to call."},
    {"forward", (PyCFunction)(void (*)(void))py_forward, METH_FASTCALL,
     "The forward time loop (see kernels/cpu/lstm_cpu_module.cpp)."},
    {"backward", (PyCFunction)(void (*)(void))py_backward, METH_FASTCALL,
     "The backward time loop and the weight gradients."},
    {"act_fn", (PyCFunction)(void (*)(void))py_act_fn, METH_FASTCALL,
     "act_fn(act, x, y): y = activation `act` of x."},
    {"act_grad", (PyCFunction)(void (*)(void))py_act_grad, METH_FASTCALL,
     "act_grad(act, x, y, dy): dy = derivative of activation `act` at x (y = act(x))."},
    {"isa", (PyCFunction)py_isa, METH_NOARGS,
     "The instruction set the core's code runs in (the best this CPU runs, unless lowered)."},
    {"set_isa", (PyCFunction)py_set_isa, METH_O,
     "set_isa(name): run the code of a lower instruction set (for the tests; None: the best "
     "this CPU runs); returns the previous one."},
    {nullptr, nullptr, 0, nullptr}};

PyModuleDef module = {PyModuleDef_HEAD_INIT, "_cpu_core",
                      "The CPU core of lstm_gpu (see lstm_gpu/paths/cpu_native.py).", -1,
                      methods, nullptr, nullptr, nullptr, nullptr};

}  // namespace
}  // namespace lstm_cpu

PyMODINIT_FUNC PyInit__cpu_core(void) {
    PyObject* m = PyModule_Create(&lstm_cpu::module);
    if (m != nullptr && PyModule_AddIntConstant(m, "ACT_COUNT", lstm::ACT_COUNT) != 0) {
        Py_DECREF(m);
        return nullptr;
    }
    return m;
}
