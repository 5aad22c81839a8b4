/* cardc runtime kernels (see cardc_kernels.h for layouts and formats).
 *
 * With GCC/Clang the kernels use generic 8-float vectors (vector_size
 * extension): AVX2 + FMA on x86 with -march=native, NEON on aarch64,
 * scalar code elsewhere; -ffp-contract=fast turns `a + x * s` into FMAs.
 * Define CARDC_PORTABLE (or use another compiler) for plain C99 with the
 * same arithmetic order. */
#include "cardc_kernels.h"

#include <math.h>
#include <string.h>

#if defined(__GNUC__) && !defined(CARDC_PORTABLE)
typedef float v8 __attribute__((vector_size(32)));
static inline v8 v8_zero(void) {
  v8 v = {0, 0, 0, 0, 0, 0, 0, 0};
  return v;
}
/* Unaligned load through memcpy: no aliasing or alignment UB. */
static inline v8 v8_load(const float *p) {
  v8 v;
  memcpy(&v, p, sizeof v);
  return v;
}
static inline v8 v8_fma(v8 a, v8 x, float s) { return a + x * s; }
/* The first n < 8 floats at p, zeros after them (lane by lane: taking the
 * vector's address would keep a kernel's accumulators in memory). */
static inline v8 v8_load_part(const float *p, int32_t n) {
  v8 v = v8_zero();
  int32_t i;
  for (i = 0; i < n; i++) v[i] = p[i];
  return v;
}
#if defined(__clang__) || __GNUC__ >= 12
/* p[0], p[2], .., p[14], reading p[0 .. 15] or (v8_evens15) only up to
 * p[14]: the second load starts at p + 7. */
#define CARDC_DEINTERLEAVE 1
static inline v8 v8_evens(const float *p) {
  v8 a = v8_load(p), b = v8_load(p + 8);
  return __builtin_shufflevector(a, b, 0, 2, 4, 6, 8, 10, 12, 14);
}
static inline v8 v8_evens15(const float *p) {
  v8 a = v8_load(p), b = v8_load(p + 7);
  return __builtin_shufflevector(a, b, 0, 2, 4, 6, 9, 11, 13, 15);
}
#endif
static inline v8 v8_add(v8 a, v8 x) { return a + x; }
static inline v8 v8_sub(v8 a, v8 x) { return a - x; }
typedef int32_t v8i __attribute__((vector_size(32)));
/* act(v) on all 8 lanes (branch-free ReLU/ReLU6). */
static inline v8 v8_act(v8 v, int32_t act) {
  v8 zero = v8_zero(), six = zero + 6.0f;
  if (act == CARDC_ACT_SIGN) {
    v8i ge = v >= zero;
    return (v8)((ge & (v8i)(zero + 1.0f)) | (~ge & (v8i)(zero - 1.0f)));
  }
  if (act != CARDC_ACT_NONE) v = (v8)((v8i)v & (v > zero));
  if (act == CARDC_ACT_RELU6) {
    v8i lt = v < six;
    v = (v8)(((v8i)v & lt) | ((v8i)six & ~lt));
  }
  return v;
}
/* y = act(acc * m + b), and with a residual r, act((acc * m + b) + r):
 * the sum the unfused Add would take of the stored output. */
static inline v8 v8_epilogue(v8 acc, float m, float b, int32_t act) {
  return v8_act(acc * m + b, act);
}
static inline v8 v8_epilogue_res(v8 acc, float m, float b, v8 r, int32_t act) {
  v8 y = acc * m + b;
  return v8_act(y + r, act);
}
#define CARDC_CTZ(x) __builtin_ctz(x)
#define CARDC_NOINLINE __attribute__((noinline))
#define CARDC_INLINE inline __attribute__((always_inline))
#else
#define CARDC_NOINLINE
#define CARDC_INLINE inline
#endif
/* Loops that write a border of one or two floats per row: GCC would turn
 * each into a call to memset (one per row and channel, most of the time
 * of a padding copy); written as stores instead. */
#if defined(__GNUC__) && !defined(__clang__)
#define CARDC_NO_MEMSET __attribute__((optimize("no-tree-loop-distribute-patterns")))
#else
#define CARDC_NO_MEMSET
#endif
#if !(defined(__GNUC__) && !defined(CARDC_PORTABLE))
typedef struct {
  float e[8];
} v8;
static v8 v8_zero(void) {
  v8 v;
  memset(&v, 0, sizeof v);
  return v;
}
static v8 v8_load(const float *p) {
  v8 v;
  memcpy(v.e, p, sizeof v.e);
  return v;
}
static v8 v8_fma(v8 a, v8 x, float s) {
  int i;
  for (i = 0; i < 8; i++) a.e[i] += x.e[i] * s;
  return a;
}
static v8 v8_add(v8 a, v8 x) {
  int i;
  for (i = 0; i < 8; i++) a.e[i] += x.e[i];
  return a;
}
static v8 v8_sub(v8 a, v8 x) {
  int i;
  for (i = 0; i < 8; i++) a.e[i] -= x.e[i];
  return a;
}
static v8 v8_load_part(const float *p, int32_t n) {
  v8 v = v8_zero();
  int32_t i;
  for (i = 0; i < n; i++) v.e[i] = p[i];
  return v;
}
static int cardc_ctz(uint32_t x) {
  int n = 0;
  while (!(x & 1u)) {
    x >>= 1;
    n++;
  }
  return n;
}
#define CARDC_CTZ(x) cardc_ctz(x)
static float act_apply(float v, int32_t act);
static v8 v8_epilogue(v8 acc, float m, float b, int32_t act) {
  int i;
  for (i = 0; i < 8; i++) acc.e[i] = act_apply(acc.e[i] * m + b, act);
  return acc;
}
static v8 v8_epilogue_res(v8 acc, float m, float b, v8 r, int32_t act) {
  int i;
  for (i = 0; i < 8; i++) {
    float y = acc.e[i] * m + b;
    acc.e[i] = act_apply(y + r.e[i], act);
  }
  return acc;
}
#endif

/* Pixel vectors per dense tile (x CARDC_J channels = 12 accumulators:
 * AVX2 has 16 registers) and per sparse/binary tile (8 accumulators hide
 * the add/FMA latency). */
#define DENSE_V 3
#define SPARSE_V 8

static float act_apply(float v, int32_t act) {
  if (act == CARDC_ACT_SIGN) return v >= 0.0f ? 1.0f : -1.0f;
  if (act == CARDC_ACT_RELU) return v > 0.0f ? v : 0.0f;
  if (act == CARDC_ACT_RELU6) return v > 0.0f ? (v < 6.0f ? v : 6.0f) : 0.0f;
  return v;
}

float cardc_half_to_float(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
  uint32_t e = (uint32_t)(h >> 10) & 0x1fu;
  uint32_t m = (uint32_t)h & 0x3ffu;
  uint32_t bits;
  float f;
  if (e == 0) {
    /* zero or subnormal: m * 2^-24, exact in f32 */
    f = (float)m * (1.0f / 16777216.0f);
    return (h & 0x8000u) ? -f : f;
  } else if (e == 31) {
    bits = sign | 0x7f800000u | (m << 13);
  } else {
    bits = sign | ((e + 112u) << 23) | (m << 13);
  }
  memcpy(&f, &bits, sizeof f);
  return f;
}

/* n zero floats at p (a padding border: usually a few floats, so the
 * short case comes first, without a vectorized loop's set-up). */
static inline void zero_floats(float *p, size_t n) {
  size_t j = 0;
  if (n >= 8) {
    const v8 z = v8_zero();
    for (; j + 8 <= n; j += 8) memcpy(p + j, &z, sizeof z);
  }
  for (; j < n; j++) p[j] = 0.0f;
}

/* row[j] = src[2j] for j < n (one column phase of a stride-2 layer's
 * input row), reading nothing outside src[0 .. 2n-2]: 8 columns per step,
 * the last 8 (which may overlap the previous step) from 15 floats. */
static void copy_stride2(float *row, const float *src, int32_t n) {
  int32_t j = 0;
#ifdef CARDC_DEINTERLEAVE
  if (n >= 8) {
    v8 v;
    for (; j + 9 <= n; j += 8) {
      v = v8_evens(src + 2 * (size_t)j);
      memcpy(row + j, &v, sizeof v);
    }
    v = v8_evens15(src + 2 * (size_t)(n - 8));
    memcpy(row + (n - 8), &v, sizeof v);
    return;
  }
#endif
  for (; j < n; j++) row[j] = src[2 * (size_t)j];
}

/* row[j] = src[j * sw] for j < n: a column phase of an input row. */
static void copy_strided(float *row, const float *src, int32_t n, int32_t sw) {
  int32_t j;
  if (sw == 1)
    for (j = 0; j < n; j++) row[j] = src[j];
  else if (sw == 2)
    copy_stride2(row, src, n);
  else
    for (j = 0; j < n; j++) row[j] = src[(size_t)j * (size_t)sw];
}

/* Copies [ic][ih][iw] into the padded, phase-split scratch layout, writing
 * every scratch float once: per channel and phase, zeros up to the first
 * image row's first valid column, then per image row its valid columns and
 * the zeros up to the next row's first valid column (the right border and
 * the next row's left border are adjacent), the last one up to the
 * plane's end. Per phase the valid columns j0..j1 are computed once; the
 * geometry is read into locals, since stores through float pointers would
 * otherwise force reloads of L's fields. */
static void CARDC_NO_MEMSET pad_input(const cardc_layer *L, const float *in, float *s) {
  int32_t ci, q, y;
  const int32_t ic = L->ic, ih = L->ih, iw = L->iw, ph = L->ph, pw = L->pw;
  const int32_t sw = L->sw, hp = L->hp, wq = L->wq;
  const size_t src_plane = L->in_plane ? (size_t)L->in_plane : (size_t)ih * (size_t)iw;
  const size_t src_row = L->in_plane ? (size_t)L->in_row : (size_t)iw;
  const size_t src_base = L->in_plane ? (size_t)L->in_base : 0;
  /* plane rows holding image rows: [y0, y1) */
  const int32_t y0 = ph < hp ? ph : hp, y1 = ph + ih < hp ? ph + ih : hp;
  const size_t psize = (size_t)hp * (size_t)wq;
  if (L->kh == 1 && L->kw == 1 && ph == 0 && pw == 0 && (L->sh > 1 || sw > 1) &&
      L->format != CARDC_XNOR) {
    /* A strided 1x1 layer (a shortcut) reads phase 0 of rows 0, sh, ..:
     * only those are copied; the kernels read nothing else (xnor layers
     * pack every position). */
    const int32_t oh = L->oh, ow = L->ow, sh = L->sh;
    for (ci = 0; ci < ic; ci++)
      for (y = 0; y < oh; y++) {
        float *row = s + (size_t)ci * (size_t)sw * psize + (size_t)(y * sh) * (size_t)wq;
        copy_strided(row, in + (size_t)ci * src_plane + src_base + (size_t)(y * sh) * src_row,
                     ow, sw);
      }
    return;
  }
  for (q = 0; q < sw; q++) {
    /* columns j with 0 <= j*sw + q - pw < iw */
    int32_t j0 = pw > q ? (pw - q + sw - 1) / sw : 0;
    int32_t j1 = (iw + pw - q + sw - 1) / sw, n;
    if (j1 > wq) j1 = wq;
    if (j0 > j1) j0 = j1;
    n = j1 - j0;
    for (ci = 0; ci < ic; ci++) {
      float *plane = s + ((size_t)ci * (size_t)sw + (size_t)q) * psize;
      const float *chan = in + (size_t)ci * src_plane + src_base;
      if (n == 0 || y0 >= y1) {
        zero_floats(plane, psize);
        continue;
      }
      zero_floats(plane, (size_t)y0 * (size_t)wq + (size_t)j0);
      for (y = y0; y < y1; y++) {
        float *row = plane + (size_t)y * (size_t)wq;
        const float *src = chan + (size_t)(y - ph) * src_row + (size_t)(j0 * sw + q - pw);
        const size_t end = y + 1 < y1 ? (size_t)(y + 1) * (size_t)wq + (size_t)j0 : psize;
        copy_strided(row + j0, src, n, sw);
        zero_floats(row + j1, end - ((size_t)y * (size_t)wq + (size_t)j1));
      }
    }
  }
}

/* Whether the kernels write the left and right borders of a zero-bordered
 * output themselves, per output channel and tile just after its rows
 * (those lines are being written anyway; a separate pass over the borders
 * touches a line per row for a float or two). zero_borders then only
 * clears the rows above and below the image. */
static int row_borders_in_stores(const cardc_layer *L) {
  return L->out_wq > 0 && L->format != CARDC_XNOR && L->out_pw > 0 &&
         L->out_wq == L->ow + 2 * L->out_pw;
}

/* Output vectors t0..t0+n: scratch base offsets, output offsets and valid
 * lanes. Vectors past the end repeat vector t0 (computed, not stored).
 * With row_borders_in_stores, runs[0..*nruns) are the output offsets of
 * the out_pw-float borders left of each row's first vector and right of
 * its last (at most two per vector). */
static void tile_setup(const cardc_layer *L, int32_t t0, int32_t nvec, int32_t n,
                       int32_t *base, int32_t *dst, int32_t *lanes, int32_t *runs,
                       int32_t *nruns) {
  int32_t nvx = (L->ow + 7) / 8, v, r = 0;
  const int32_t borders = row_borders_in_stores(L);
  for (v = 0; v < n; v++) {
    int32_t t = t0 + v < nvec ? t0 + v : t0;
    int32_t oy = t / nvx, ox0 = (t % nvx) * 8, left = L->ow - ox0;
    int32_t k = left < 8 ? left : 8;
    base[v] = oy * L->sh * L->wq + ox0;
    dst[v] = oy * L->out_row + ox0 + L->out_base;
    lanes[v] = t0 + v < nvec ? k : 0;
    if (borders && t0 + v < nvec) {
      if (ox0 == 0) runs[r++] = dst[v] - L->out_pw;
      if (ox0 + k == L->ow) runs[r++] = dst[v] + k;
    }
  }
  *nruns = r;
}

/* The valid lanes of one vector. */
static CARDC_INLINE void store_vec(float *y, v8 v, int32_t lanes) {
  if (lanes == 8)
    memcpy(y, &v, sizeof v);
  else if (lanes > 0)
    memcpy(y, &v, sizeof(float) * (size_t)lanes);
}

/* The tile's border runs (tile_setup) as zeros. */
static CARDC_INLINE void store_runs(float *y, const int32_t *runs, int32_t nruns, int32_t pw) {
  int32_t r, i;
  if (pw == 1) /* scattered single stores (GCC makes the loop below a memset call) */
    for (r = 0; r < nruns; r++) y[runs[r]] = 0.0f;
  else
    for (r = 0; r < nruns; r++)
      for (i = 0; i < pw; i++) y[runs[r] + i] = 0.0f;
}

/* The residual (laid out like the output) under vector v. */
static CARDC_INLINE v8 residual_vec(const float *res, const int32_t *dst, const int32_t *lanes,
                                    int32_t v) {
  return lanes[v] == 8 ? v8_load(res + dst[v]) : v8_load_part(res + dst[v], lanes[v]);
}

/* store_tile for any activation, out of line: one copy for all kernels. */
static CARDC_NOINLINE void store_tile_any(float *y, const float *res, const int32_t *dst,
                                          const int32_t *lanes, const v8 *acc, int32_t n,
                                          float m, float b, int32_t act, const int32_t *runs,
                                          int32_t nruns, int32_t pw) {
  int32_t v;
  for (v = 0; v < n; v++)
    store_vec(y + dst[v],
              res ? v8_epilogue_res(acc[v], m, b, residual_vec(res, dst, lanes, v), act)
                  : v8_epilogue(acc[v], m, b, act),
              lanes[v]);
  store_runs(y, runs, nruns, pw);
}

/* y[dst[v]] = act(acc[v] * m + b), or with a fused residual Add (res,
 * laid out like the output) act((acc[v] * m + b) + res[dst[v]]), for the
 * n vectors of a tile, then the tile's border runs. ReLU, the common
 * case, is inlined into each kernel with the accumulators in registers;
 * other activations go through one out-of-line copy (inlining every case
 * into every kernel doubled the kernels' compile time). */
static CARDC_INLINE void store_tile(float *y, const float *res, const int32_t *dst,
                                    const int32_t *lanes, const v8 *acc, int32_t n, float m,
                                    float b, int32_t act, const int32_t *runs, int32_t nruns,
                                    int32_t pw) {
  int32_t v;
  if (act != CARDC_ACT_RELU) {
    store_tile_any(y, res, dst, lanes, acc, n, m, b, act, runs, nruns, pw);
    return;
  }
  if (res)
    for (v = 0; v < n; v++)
      store_vec(y + dst[v],
                v8_epilogue_res(acc[v], m, b, residual_vec(res, dst, lanes, v), CARDC_ACT_RELU),
                lanes[v]);
  else
    for (v = 0; v < n; v++)
      store_vec(y + dst[v], v8_epilogue(acc[v], m, b, CARDC_ACT_RELU), lanes[v]);
  store_runs(y, runs, nruns, pw);
}

/* Dense kernel for weight type WT read through LOADW, storing through STORE. */
#define CARDC_DENSE(NAME, WT, LOADW, STORE)                                               \
  static void NAME(const cardc_layer *L, const WT *W, const float *s, const float *res,    \
                   float *out) {                                                           \
    int32_t cols = L->ic * L->kh * L->kw, nvx = (L->ow + 7) / 8, nvec = L->oh * nvx;      \
    int32_t nob = (L->oc + CARDC_J - 1) / CARDC_J, t0, ob, k, j, v;                       \
    size_t plane = (size_t)L->out_plane;                                          \
    for (t0 = 0; t0 < nvec; t0 += DENSE_V) {                                               \
      int32_t base[DENSE_V], dst[DENSE_V], lanes[DENSE_V], runs[2 * DENSE_V], nruns;       \
      tile_setup(L, t0, nvec, DENSE_V, base, dst, lanes, runs, &nruns);                    \
      for (ob = 0; ob < nob; ob++) {                                                       \
        const WT *w = W + (size_t)ob * (size_t)cols * CARDC_J;                             \
        v8 acc[CARDC_J][DENSE_V];                                                          \
        for (j = 0; j < CARDC_J; j++)                                                      \
          for (v = 0; v < DENSE_V; v++) acc[j][v] = v8_zero();                             \
        for (k = 0; k < cols; k++, w += CARDC_J) {                                         \
          const float *x = s + L->koff[k];                                                 \
          v8 xv[DENSE_V];                                                                  \
          for (v = 0; v < DENSE_V; v++) xv[v] = v8_load(x + base[v]);                      \
          for (j = 0; j < CARDC_J; j++) {                                                  \
            float wj = LOADW(w[j]);                                                        \
            for (v = 0; v < DENSE_V; v++) acc[j][v] = v8_fma(acc[j][v], xv[v], wj);        \
          }                                                                                \
        }                                                                                  \
        for (j = 0; j < CARDC_J; j++) {                                                    \
          int32_t o = ob * CARDC_J + j;                                                    \
          float m;                                                                         \
          if (o >= L->oc) break;                                                           \
          m = L->mult ? L->mult[o] : 1.0f;                                                 \
          STORE(out + (size_t)o * plane, res ? res + (size_t)o * plane : 0, dst, lanes,    \
                acc[j], DENSE_V, m, L->bias[o], L->act, runs, nruns, L->out_pw);           \
        }                                                                                  \
      }                                                                                    \
    }                                                                                      \
  }

#define LOAD_F32(x) (x)
#define LOAD_F16(x) cardc_half_to_float(x)
#define LOAD_I8(x) ((float)(x))
/* f32 inlines its ReLU stores; f16 and int8 (flash-bound targets) call
 * the out-of-line copy, which keeps the kernels' compile time down. */
CARDC_DENSE(dense_f32, float, LOAD_F32, store_tile)
CARDC_DENSE(dense_f16, uint16_t, LOAD_F16, store_tile_any)
CARDC_DENSE(dense_i8, int8_t, LOAD_I8, store_tile_any)

/* Sparse: per output channel, its nonzero values times the inputs at
 * their offsets, for SPARSE_V pixel vectors at once. NNZ is the per-channel
 * count, OFF(j) and W(j) the offset and value of entry j. */
#define CARDC_SPARSE_ROWS(NNZ, OFF, W)                                           \
  for (o = 0; o < L->oc; o++) {                                                  \
    uint32_t c, cnt = NNZ[o];                                                    \
    v8 acc[SPARSE_V];                                                            \
    for (v = 0; v < SPARSE_V; v++) acc[v] = v8_zero();                           \
    for (c = 0; c < cnt; c++, j++) {                                             \
      size_t off = OFF(j);                                                       \
      float w = W(j);                                                            \
      for (v = 0; v < SPARSE_V; v++) acc[v] = v8_fma(acc[v], v8_load(xb[v] + off), w); \
    }                                                                            \
    store_tile(out + (size_t)o * plane, res ? res + (size_t)o * plane : 0, dst,  \
               lanes, acc, SPARSE_V, L->mult ? L->mult[o] : 1.0f, L->bias[o],    \
               L->act, runs, nruns, pw);                                         \
  }

#define SP_OFF16(j) L->off16[j]
#define SP_OFF32(j) L->off32[j]
#define SP_VAL(j) L->sp_val[j]
#define SP_VAL8(j) ((float)L->sp_val8[j])
/* A decoded Rice layer: offsets with the sign in bit 31, values +-1. */
#define RICE_OFF(j) (L->rice_off[j] & 0x7fffffffu)
#define RICE_SIGN(j) ((L->rice_off[j] >> 31) ? -1.0f : 1.0f)

/* Binary as offset lists (sparse binary layers): per output channel the
 * inputs under kept +1 signs, then those under kept -1 signs; OFF(j) is
 * entry j's offset. */
#define CARDC_BINARY_ROWS(OFF)                                                   \
  for (o = 0; o < L->oc; o++) {                                                  \
    uint32_t c, npos = L->bin_npos[o], nneg = L->bin_nneg[o];                    \
    v8 acc[SPARSE_V];                                                            \
    for (v = 0; v < SPARSE_V; v++) acc[v] = v8_zero();                           \
    for (c = 0; c < npos; c++, j++) {                                            \
      size_t off = OFF(j);                                                       \
      for (v = 0; v < SPARSE_V; v++) acc[v] = v8_add(acc[v], v8_load(xb[v] + off)); \
    }                                                                            \
    for (c = 0; c < nneg; c++, j++) {                                            \
      size_t off = OFF(j);                                                       \
      for (v = 0; v < SPARSE_V; v++) acc[v] = v8_sub(acc[v], v8_load(xb[v] + off)); \
    }                                                                            \
    store_tile(out + (size_t)o * plane, res ? res + (size_t)o * plane : 0, dst,  \
               lanes, acc, SPARSE_V, L->mult[o], L->bias[o], L->act, runs, nruns, pw); \
  }

/* The kernels that walk per-channel offset lists: sparse layers (f32 or
 * int8 values, the latter scaled by mult[o] in the epilogue), binary
 * layers stored as lists, and Rice-coded binary layers once decoded
 * (rice_decode; the sparse rows with +-1 values from the offsets' sign
 * bits). */
static void lists(const cardc_layer *L, const float *s, const float *res, float *out) {
  int32_t nvx = (L->ow + 7) / 8, nvec = L->oh * nvx, t0, o, v;
  const int32_t pw = L->out_pw;
  size_t plane = (size_t)L->out_plane;
  for (t0 = 0; t0 < nvec; t0 += SPARSE_V) {
    int32_t base[SPARSE_V], dst[SPARSE_V], lanes[SPARSE_V], runs[2 * SPARSE_V], nruns;
    const float *xb[SPARSE_V]; /* per vector: scratch + base (register addressing) */
    size_t j = 0;
    tile_setup(L, t0, nvec, SPARSE_V, base, dst, lanes, runs, &nruns);
    for (v = 0; v < SPARSE_V; v++) xb[v] = s + base[v];
    if (L->format == CARDC_BINARY_RICE) {
      CARDC_SPARSE_ROWS(L->rice_counts, RICE_OFF, RICE_SIGN)
    } else if (L->format == CARDC_BINARY_LISTS) {
      if (L->off16) {
        CARDC_BINARY_ROWS(SP_OFF16)
      } else {
        CARDC_BINARY_ROWS(SP_OFF32)
      }
    } else if (L->format == CARDC_SPARSE8) {
      if (L->off16) {
        CARDC_SPARSE_ROWS(L->sp_nnz, SP_OFF16, SP_VAL8)
      } else {
        CARDC_SPARSE_ROWS(L->sp_nnz, SP_OFF32, SP_VAL8)
      }
    } else if (L->off16) {
      CARDC_SPARSE_ROWS(L->sp_nnz, SP_OFF16, SP_VAL)
    } else {
      CARDC_SPARSE_ROWS(L->sp_nnz, SP_OFF32, SP_VAL)
    }
  }
}

/* Binary: weights are ±mult[o] where kept, so each output channel adds the
 * inputs under kept +1 signs and subtracts those under kept -1 signs (no
 * multiplies); set bits are visited with count-trailing-zeros. */
static void binary(const cardc_layer *L, const float *s, const float *res, float *out) {
  int32_t nvx = (L->ow + 7) / 8, nvec = L->oh * nvx, t0, o, v, p, wd;
  int32_t positions = L->kh * L->kw, words = L->bin_words;
  size_t plane = (size_t)L->out_plane;
  size_t cstride = (size_t)L->sw * (size_t)L->hp * (size_t)L->wq;
  for (t0 = 0; t0 < nvec; t0 += SPARSE_V) {
    int32_t base[SPARSE_V], dst[SPARSE_V], lanes[SPARSE_V], runs[2 * SPARSE_V], nruns;
    tile_setup(L, t0, nvec, SPARSE_V, base, dst, lanes, runs, &nruns);
    for (o = 0; o < L->oc; o++) {
      v8 acc[SPARSE_V];
      for (v = 0; v < SPARSE_V; v++) acc[v] = v8_zero();
      for (p = 0; p < positions; p++) {
        for (wd = 0; wd < words; wd++) {
          size_t at = ((size_t)o * (size_t)positions + (size_t)p) * (size_t)words + (size_t)wd;
          int32_t nb = L->ic - 32 * wd;
          uint32_t full = nb >= 32 ? 0xffffffffu : (1u << nb) - 1u;
          uint32_t m = L->bin_mask ? L->bin_mask[at] : full;
          uint32_t pos = m & ~L->bin_sign[at], neg = m & L->bin_sign[at];
          const float *xp = s + (size_t)L->poff[p] + (size_t)(32 * wd) * cstride;
          while (pos) {
            const float *x = xp + (size_t)CARDC_CTZ(pos) * cstride;
            pos &= pos - 1u;
            for (v = 0; v < SPARSE_V; v++) acc[v] = v8_add(acc[v], v8_load(x + base[v]));
          }
          while (neg) {
            const float *x = xp + (size_t)CARDC_CTZ(neg) * cstride;
            neg &= neg - 1u;
            for (v = 0; v < SPARSE_V; v++) acc[v] = v8_sub(acc[v], v8_load(x + base[v]));
          }
        }
      }
      store_tile(out + (size_t)o * plane, res ? res + (size_t)o * plane : 0, dst, lanes, acc,
                 SPARSE_V, L->mult[o], L->bias[o], L->act, runs, nruns, L->out_pw);
    }
  }
}

/* ---- xnor: binary weights on +-1 inputs (XOR and popcount) ---- */

#if defined(__GNUC__)
#define CARDC_POPCOUNT(x) ((uint32_t)__builtin_popcount(x))
#else
static uint32_t cardc_popcount(uint32_t x) {
  x = x - ((x >> 1) & 0x55555555u);
  x = (x & 0x33333333u) + ((x >> 2) & 0x33333333u);
  x = (x + (x >> 4)) & 0x0f0f0f0fu;
  return (x * 0x01010101u) >> 24;
}
#define CARDC_POPCOUNT(x) cardc_popcount(x)
#endif

/* The portable kernel's word: 64 bits where pointers are (one POPCNT per
 * 64 weights on x86-64), else 32. */
#if defined(__GNUC__) && UINTPTR_MAX > 0xffffffffu
typedef uint64_t cardc_xword;
#define CARDC_POPCOUNT_XWORD(x) ((uint32_t)__builtin_popcountll(x))
#define CARDC_XNOR_INLINE inline __attribute__((always_inline))
#else
typedef uint32_t cardc_xword;
#define CARDC_POPCOUNT_XWORD(x) CARDC_POPCOUNT(x)
#define CARDC_XNOR_INLINE
#endif

/* Output pixels per block (cardc's xnor::BLOCK): the patches of eight
 * neighbouring pixels of a row, eight table entries per channel. */
#define CARDC_XNOR_BLOCK 8

#if defined(__aarch64__) && defined(__ARM_NEON) && !defined(CARDC_PORTABLE) && \
    !defined(CARDC_XNOR_GENERIC)
#include <arm_neon.h>
#define CARDC_XNOR_NEON 1
/* Largest chunk count the NEON path takes (K <= 576 bits: a 3x3 kernel
 * on 64 channels; longer patches run the portable path). Its byte
 * counters would allow 7 (4 bytes of up to 8 per chunk, plus the tail's up
 * to 16, below 256), but each chunk count is a specialized function, and 5
 * to 7 chunks doubled the artifact's compile time (18 -> 37 s) for shapes
 * no built-in architecture has. */
#define CARDC_XNOR_NEON_CHUNKS 4
/* Largest chunk count the eight-lane path takes: its patches stay in
 * registers, and its last byte counters sum two of up to 32 * chunks + 16. */
#define CARDC_XNOR_NEON8_CHUNKS 2
#endif

/* Packs the signs of the padded input: word plane w, position pos, bit i
 * set when channel 32*w + i is negative (-1; zero padding packs as +1). */
static void CARDC_NOINLINE xnor_pack_input(const cardc_layer *L, const float *s, uint32_t *bits,
                                           size_t positions) {
  int32_t w, c, cw = (L->ic + 31) / 32;
  size_t pos = 0;
  for (w = 0; w < cw; w++) {
    /* channels 32w .. hi, the highest first: each shifts the word left */
    int32_t lo = 32 * w, hi = L->ic < lo + 32 ? L->ic - 1 : lo + 31;
    uint32_t *b = bits + (size_t)w * positions;
    pos = 0;
#ifdef CARDC_XNOR_NEON
    /* 8 positions at a time: per channel two loads, two USHR, two SLI */
    for (; pos + 8 <= positions; pos += 8) {
      uint32x4_t acc0 = vdupq_n_u32(0), acc1 = acc0;
      size_t at = (size_t)hi * positions + pos; /* unsigned: wraps harmlessly past lo */
      for (c = hi; c >= lo; c--, at -= positions) {
        acc0 = vsliq_n_u32(vshrq_n_u32(vreinterpretq_u32_f32(vld1q_f32(s + at)), 31), acc0, 1);
        acc1 = vsliq_n_u32(vshrq_n_u32(vreinterpretq_u32_f32(vld1q_f32(s + at + 4)), 31), acc1, 1);
      }
      vst1q_u32(b + pos, acc0);
      vst1q_u32(b + pos + 4, acc1);
    }
#endif
    for (; pos < positions; pos++) {
      uint32_t acc = 0;
      for (c = hi; c >= lo; c--) acc = acc << 1 | (uint32_t)(s[(size_t)c * positions + pos] < 0.0f);
      b[pos] = acc;
    }
  }
}

#if defined(__BYTE_ORDER__) && defined(__ORDER_LITTLE_ENDIAN__) && \
    __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
/* Little-endian: a word's bit k is byte k/8's bit k%8, so with a multiple
 * of 8 channels a patch is kh runs of kw*ic/8 bytes, one per kernel row. */
#define CARDC_XNOR_BYTES 1
#endif

/* Whether the layer's patches are built from byte rows. */
static int xnor_bytes(const cardc_layer *L) {
#ifdef CARDC_XNOR_BYTES
  return L->ic % 8 == 0;
#else
  (void)L;
  return 0;
#endif
}

/* The packed signs as byte rows: padded row y, padded column x, at
 * rows[(y * sw*wq + x) * ic/8], ic/8 bytes of channels. Geometry in
 * locals: the byte stores may alias anything, L included. */
static void xnor_rows(const cardc_layer *L, const uint32_t *bits, size_t positions, uint8_t *rows) {
  const int32_t bpp = L->ic / 8, cw = (L->ic + 31) / 32, sw = L->sw, hp = L->hp, wq = L->wq;
  int32_t y, q, j, w;
  for (q = 0; q < sw; q++)
    for (y = 0; y < hp; y++) {
      const uint32_t *src = bits + ((size_t)q * (size_t)hp + (size_t)y) * (size_t)wq;
      uint8_t *d = rows + ((size_t)y * (size_t)sw * (size_t)wq + (size_t)q) * (size_t)bpp;
      for (j = 0; j < wq; j++, d += (size_t)sw * (size_t)bpp)
        for (w = 0; w < cw; w++) {
          uint32_t v = src[(size_t)w * positions + (size_t)j];
          int32_t n = bpp - 4 * w;
          if (n >= 4) {
            memcpy(d + 4 * w, &v, 4);
          } else {
            d[4 * w] = (uint8_t)v;
            if (n > 1) d[4 * w + 1] = (uint8_t)(v >> 8);
            if (n > 2) d[4 * w + 2] = (uint8_t)(v >> 16);
          }
        }
    }
}

/* With stride 1 the padded positions are already in row order, so the
 * signs pack straight into the byte rows (bit i of byte k: channel 8k + i
 * negative), without the word planes: per word of 32 channels and 8
 * positions, one load and one SRI per channel (the float's sign bit shifted
 * in from the top, channels in increasing order). */
static void CARDC_NOINLINE xnor_pack_rows(const cardc_layer *L, const float *s, uint8_t *rows,
                                          size_t positions) {
  const int32_t ic = L->ic, bpp = ic / 8, cw = (ic + 31) / 32;
  int32_t w, c;
  for (w = 0; w < cw; w++) {
    const int32_t lo = 32 * w, hi = ic < lo + 32 ? ic : lo + 32, nb = bpp - 4 * w < 4 ? bpp - 4 * w : 4;
    size_t pos = 0;
#ifdef CARDC_XNOR_NEON
    const int32_t shift = 32 - (hi - lo);
    for (; pos + 8 <= positions; pos += 8) {
      uint32x4_t acc0 = vdupq_n_u32(0), acc1 = acc0;
      const float *x = s + (size_t)lo * positions + pos;
      uint32_t wd[8];
      int32_t k;
      /* two channels per step: SRI overwrites its first operand, so the
       * accumulators alternate registers instead of being moved back */
      for (c = lo; c + 2 <= hi; c += 2, x += 2 * positions) {
        uint32x4_t b0 = vsriq_n_u32(vreinterpretq_u32_f32(vld1q_f32(x)), acc0, 1);
        uint32x4_t b1 = vsriq_n_u32(vreinterpretq_u32_f32(vld1q_f32(x + 4)), acc1, 1);
        acc0 = vsriq_n_u32(vreinterpretq_u32_f32(vld1q_f32(x + positions)), b0, 1);
        acc1 = vsriq_n_u32(vreinterpretq_u32_f32(vld1q_f32(x + positions + 4)), b1, 1);
      }
      if (c < hi) {
        acc0 = vsriq_n_u32(vreinterpretq_u32_f32(vld1q_f32(x)), acc0, 1);
        acc1 = vsriq_n_u32(vreinterpretq_u32_f32(vld1q_f32(x + 4)), acc1, 1);
      }
      if (shift) {
        acc0 = vshlq_u32(acc0, vdupq_n_s32(-shift));
        acc1 = vshlq_u32(acc1, vdupq_n_s32(-shift));
      }
      if (bpp == 4) {
        vst1q_u8(rows + 4 * pos, vreinterpretq_u8_u32(acc0));
        vst1q_u8(rows + 4 * pos + 16, vreinterpretq_u8_u32(acc1));
        continue;
      }
      if (bpp == 2) {
        vst1q_u8(rows + 2 * pos,
                 vreinterpretq_u8_u16(vcombine_u16(vmovn_u32(acc0), vmovn_u32(acc1))));
        continue;
      }
      vst1q_u32(wd, acc0);
      vst1q_u32(wd + 4, acc1);
      for (k = 0; k < 8; k++) memcpy(rows + (pos + (size_t)k) * (size_t)bpp + 4 * w, wd + k, (size_t)nb);
    }
#endif
    for (; pos < positions; pos++) {
      uint32_t acc = 0;
      for (c = hi - 1; c >= lo; c--) acc = acc << 1 | (uint32_t)(s[(size_t)c * positions + pos] < 0.0f);
      memcpy(rows + pos * (size_t)bpp + 4 * w, &acc, (size_t)nb);
    }
  }
}

/* Copies n bytes in 8- or 4-byte moves (the last one overlapping). */
static void xnor_copy(uint8_t *d, const uint8_t *s, int32_t n) {
  int32_t i;
  if (n >= 8) {
    uint64_t t;
    for (i = 0; i + 8 <= n; i += 8) {
      memcpy(&t, s + i, 8);
      memcpy(d + i, &t, 8);
    }
    if (i < n) {
      memcpy(&t, s + n - 8, 8);
      memcpy(d + n - 8, &t, 8);
    }
  } else if (n >= 4) {
    uint32_t t;
    memcpy(&t, s, 4);
    memcpy(d, &t, 4);
    memcpy(&t, s + n - 4, 4);
    memcpy(d + n - 4, &t, 4);
  } else {
    for (i = 0; i < n; i++) d[i] = s[i];
  }
}

/* The patch bits of the output pixel whose first tap is at position base. */
static void xnor_patch(const cardc_layer *L, const uint32_t *bits, size_t positions, size_t base,
                       uint32_t *patch, int32_t rw) {
  int32_t p, w, taps = L->kh * L->kw, cw = (L->ic + 31) / 32;
  memset(patch, 0, sizeof(uint32_t) * (size_t)rw);
  for (p = 0; p < taps; p++) {
    size_t pos = base + (size_t)L->poff[p];
    for (w = 0; w < cw; w++) {
      uint32_t v = bits[(size_t)w * positions + pos];
      int32_t nb = L->ic - 32 * w, d = p * L->ic + 32 * w, at = d >> 5, sh = d & 31;
      if (nb > 32) nb = 32;
      patch[at] |= v << sh;
      if (sh && sh + nb > 32) patch[at + 1] |= v >> (32 - sh);
    }
  }
}

/* y = act(mult * (kept - 2 * count - corr) + bias) for the n valid pixels
 * of a block: the +-1 sum is formed exactly in integers first, so that the
 * result rounds like the reference's (a Sign after it flips on any
 * difference near 0). With a Sign activation kb holds the count threshold
 * instead (xnor_kept_table): -1 exactly where count > kb. */
static void xnor_store(const cardc_layer *L, int32_t o, const uint32_t *cnt, const int16_t *kb,
                       float *dst, int32_t n) {
  int32_t l;
  for (l = 0; l < n; l++) {
    if (L->act == CARDC_ACT_SIGN) {
      dst[l] = (int32_t)cnt[l] > kb[l] ? -1.0f : 1.0f;
    } else {
      int32_t t = kb[l] - 2 * (int32_t)cnt[l];
      dst[l] = act_apply(L->mult[o] * (float)t + L->bias[o], L->act);
    }
  }
}

#ifdef CARDC_XNOR_NEON
/* Epilogues of the NEON block: float (mult * t + bias, then ReLU/ReLU6 if
 * the layer has one) or Sign (a compare with the count threshold). */
#define XNOR_EP_NONE 0
#define XNOR_EP_SIGN 1
#define XNOR_EP_RELU 2
#define XNOR_EP_BITS 3

/* A Sign output as f32 for four pixels: -1 where d = threshold - count has
 * its sign bit set (count > threshold), else +1. */
static inline __attribute__((always_inline)) float32x4_t xnor_sign_f32(int32x4_t d) {
  const uint32x4_t signbit = vdupq_n_u32(0x80000000u), one = vdupq_n_u32(0x3f800000u);
  return vreinterpretq_f32_u32(vorrq_u32(vandq_u32(vreinterpretq_u32_s32(d), signbit), one));
}

/* mult * t + bias for four pixels (t = kept - correction - 2 * count),
 * then ReLU (ReLU6 when relu6) with the RELU epilogue. */
static inline __attribute__((always_inline)) float32x4_t xnor_affine_f32(int32x4_t t, float mult,
                                                                         float32x4_t bias,
                                                                         const int ep,
                                                                         int32_t relu6) {
  const float32x4_t zero = vdupq_n_f32(0.0f), six = vdupq_n_f32(6.0f);
  float32x4_t y = vaddq_f32(vmulq_n_f32(vcvtq_f32_s32(t), mult), bias);
  if (ep == XNOR_EP_RELU) {
    y = vbslq_f32(vcgtq_f32(y, zero), y, zero); /* NaN -> 0, as act_apply */
    if (relu6) y = vminq_f32(y, six);
  }
  return y;
}

/* The tails (xn_tail words, after nq chunks) of four pixels' patches, rw
 * words apart, laid out as the row's tail: one word per pixel in half 0,
 * or two per pixel, pixels 0-1 in half 0 and 2-3 in half 1. */
static inline __attribute__((always_inline)) uint8x16_t xnor_tails4(const uint32_t *patch,
                                                                    int32_t rw, const int nq,
                                                                    const int tail,
                                                                    const int half) {
  const uint32_t *t = patch + 4 * nq;
  if (tail == 1 && half == 0) {
    uint32_t t4[4];
    t4[0] = t[0];
    t4[1] = t[rw];
    t4[2] = t[2 * rw];
    t4[3] = t[3 * rw];
    return vreinterpretq_u8_u32(vld1q_u32(t4));
  }
  if (tail == 2) {
    t += 2 * half * rw;
    return vcombine_u8(vld1_u8((const uint8_t *)t), vld1_u8((const uint8_t *)(t + rw)));
  }
  return vdupq_n_u8(0);
}

/* The tail counts of four pixels (xnor_tails4) against the row's tail at
 * ws (mask at ms): bytes 4l..4l+3 hold pixel l's. */
static inline __attribute__((always_inline)) uint8x16_t xnor_tail_count4(
    uint8x16_t Ta, uint8x16_t Tb, const uint8_t *ws, const uint8_t *ms, const int tail,
    const int masked) {
  const uint8x16_t wt = vld1q_u8(ws), mt = masked ? vld1q_u8(ms) : wt;
  uint8x16_t x0 = veorq_u8(Ta, wt), x1;
  if (masked) x0 = vandq_u8(x0, mt);
  if (tail == 1) return vcntq_u8(x0);
  x1 = veorq_u8(Tb, wt);
  if (masked) x1 = vandq_u8(x1, mt);
  return vpaddq_u8(vcntq_u8(x0), vcntq_u8(x1));
}

/* One output channel's counts for the block's four pixels: per 128-bit
 * chunk one load of the signs (and of the mask), and per pixel an EOR (AND),
 * CNT and ADD; pairwise adds gather each pixel's bytes, the tail registers
 * hold the four pixels' tails. */
static inline __attribute__((always_inline)) int32x4_t xnor_count_neon(
    const uint8x16_t *P0, const uint8x16_t *P1, const uint8x16_t *P2, const uint8x16_t *P3,
    uint8x16_t Ta, uint8x16_t Tb, const uint8_t *ws, const uint8_t *ms, const int nq,
    const int tail, const int masked) {
  uint8x16_t a0 = vdupq_n_u8(0), a1 = a0, a2 = a0, a3 = a0, q;
  int32_t c;
  for (c = 0; c < nq; c++) {
    uint8x16_t w = vld1q_u8(ws + 16 * c), x0 = veorq_u8(P0[c], w), x1 = veorq_u8(P1[c], w),
               x2 = veorq_u8(P2[c], w), x3 = veorq_u8(P3[c], w);
    if (masked) {
      uint8x16_t m = vld1q_u8(ms + 16 * c);
      x0 = vandq_u8(x0, m);
      x1 = vandq_u8(x1, m);
      x2 = vandq_u8(x2, m);
      x3 = vandq_u8(x3, m);
    }
    if (c == 0) {
      a0 = vcntq_u8(x0);
      a1 = vcntq_u8(x1);
      a2 = vcntq_u8(x2);
      a3 = vcntq_u8(x3);
    } else {
      a0 = vaddq_u8(a0, vcntq_u8(x0));
      a1 = vaddq_u8(a1, vcntq_u8(x1));
      a2 = vaddq_u8(a2, vcntq_u8(x2));
      a3 = vaddq_u8(a3, vcntq_u8(x3));
    }
  }
  if (tail) {
    const uint8x16_t x = xnor_tail_count4(Ta, Tb, ws + 16 * nq, ms + 16 * nq, tail, masked);
    /* bytes 4l..4l+3 of q: pixel l's partial counts */
    q = nq ? vaddq_u8(vpaddq_u8(vpaddq_u8(a0, a1), vpaddq_u8(a2, a3)), x) : x;
  } else {
    q = vpaddq_u8(vpaddq_u8(a0, a1), vpaddq_u8(a2, a3));
  }
  return vreinterpretq_s32_u32(vpaddlq_u16(vpaddlq_u8(q)));
}

/* All output channels of four pixels, half a block whose patches are too
 * long to keep eight in registers (patches at `patch`, rw words apart; kb
 * the table's entries of the first pixel), four lanes stored per channel:
 * the four patches stay in registers; per output channel and 128-bit chunk
 * one load of the signs (and of the mask), and per pixel an EOR (AND), CNT
 * and ADD; pairwise adds gather each pixel's bytes. */
static inline __attribute__((always_inline)) void xnor_block_neon(
    const cardc_layer *L, const uint32_t *patch, int32_t rw, const int16_t *kb, float *dst,
    uint8_t *bo, size_t plane, const int nq, const int tail, const int masked, const int ep) {
  uint8x16_t P0[CARDC_XNOR_NEON_CHUNKS], P1[CARDC_XNOR_NEON_CHUNKS],
      P2[CARDC_XNOR_NEON_CHUNKS], P3[CARDC_XNOR_NEON_CHUNKS];
  const uint8x16_t Ta = xnor_tails4(patch, rw, nq, tail, 0),
                   Tb = xnor_tails4(patch, rw, nq, tail, 1);
  /* L's fields in locals: the stores to dst could alias them otherwise */
  const uint8_t *ws = (const uint8_t *)L->xn_sign;
  const uint8_t *ms = masked ? (const uint8_t *)L->xn_mask : 0;
  const float *mult = L->mult, *bias = L->bias;
  const int32_t oc = L->oc, relu6 = L->act == CARDC_ACT_RELU6;
  const size_t rb = 4 * (size_t)rw;
  int32_t o, c;
  for (c = 0; c < nq; c++) {
    P0[c] = vld1q_u8((const uint8_t *)(patch + 4 * c));
    P1[c] = vld1q_u8((const uint8_t *)(patch + rw + 4 * c));
    P2[c] = vld1q_u8((const uint8_t *)(patch + 2 * rw + 4 * c));
    P3[c] = vld1q_u8((const uint8_t *)(patch + 3 * rw + 4 * c));
  }
  if (ep == XNOR_EP_BITS) {
    /* Sign output as bits: per word of 32 channels, the sign of
     * threshold - count shifted in from the top per channel (SRI), then
     * the 4 pixels' bytes stored into the reader's rows */
    const int32_t bpp = oc / 8;
    uint8_t *rows = bo;
    int32_t w;
    for (w = 0; 32 * w < oc; w++) {
      const int32_t hi = oc < 32 * w + 32 ? oc : 32 * w + 32;
      const int32_t nb = bpp - 4 * w < 4 ? bpp - 4 * w : 4;
      uint32x4_t acc = vdupq_n_u32(0);
      for (o = 32 * w; o < hi; o++, ws += rb, ms += masked ? rb : 0, kb += CARDC_XNOR_BLOCK) {
        const int32x4_t cnt = xnor_count_neon(P0, P1, P2, P3, Ta, Tb, ws, ms, nq, tail, masked);
        acc = vsriq_n_u32(vreinterpretq_u32_s32(vsubq_s32(vmovl_s16(vld1_s16(kb)), cnt)), acc, 1);
      }
      if (hi - 32 * w < 32) acc = vshlq_u32(acc, vdupq_n_s32(hi - 32 * w - 32));
      if (bpp == 4) {
        vst1q_u8(rows, vreinterpretq_u8_u32(acc));
      } else if (bpp == 2) {
        vst1_u8(rows, vreinterpret_u8_u16(vmovn_u32(acc)));
      } else {
        uint32_t wd[4];
        int32_t l;
        vst1q_u32(wd, acc);
        for (l = 0; l < 4; l++) memcpy(rows + (size_t)l * (size_t)bpp + 4 * w, wd + l, (size_t)nb);
      }
    }
    return;
  }
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC unroll 2
#endif
  for (o = 0; o < oc; o++, ws += rb, ms += masked ? rb : 0, kb += CARDC_XNOR_BLOCK, dst += plane) {
    const int32x4_t cnt = xnor_count_neon(P0, P1, P2, P3, Ta, Tb, ws, ms, nq, tail, masked);
    const int32x4_t k = vmovl_s16(vld1_s16(kb));
    if (ep == XNOR_EP_SIGN) {
      vst1q_f32(dst, xnor_sign_f32(vsubq_s32(k, cnt)));
    } else {
      /* kept - correction - 2 * count, per pixel */
      const int32x4_t t = vsubq_s32(k, vshlq_n_s32(cnt, 1));
      vst1q_f32(dst, xnor_affine_f32(t, mult[o], vld1q_dup_f32(bias + o), ep, relu6));
    }
  }
}

/* One output channel's counts for the block's eight pixels, as eight
 * 16-bit lanes: per 128-bit chunk one load of the signs (and of the mask),
 * and per pixel an EOR (AND), CNT and ADD; pairwise adds gather each
 * pixel's bytes; T0a, T0b / T1a, T1b hold the tails of pixels 0-3 / 4-7
 * (xnor_tails4). */
static inline __attribute__((always_inline)) uint16x8_t xnor_count8_neon(
    const uint8x16_t P[CARDC_XNOR_BLOCK][CARDC_XNOR_NEON8_CHUNKS], uint8x16_t T0a, uint8x16_t T0b,
    uint8x16_t T1a, uint8x16_t T1b, const uint8_t *ws, const uint8_t *ms, const int nq,
    const int tail, const int masked) {
  uint8x16_t a[CARDC_XNOR_BLOCK], q0 = vdupq_n_u8(0), q1 = q0;
  int32_t c, l;
  for (c = 0; c < nq; c++) {
    const uint8x16_t w = vld1q_u8(ws + 16 * c), m = masked ? vld1q_u8(ms + 16 * c) : w;
    for (l = 0; l < CARDC_XNOR_BLOCK; l++) {
      uint8x16_t x = veorq_u8(P[l][c], w);
      if (masked) x = vandq_u8(x, m);
      a[l] = c == 0 ? vcntq_u8(x) : vaddq_u8(a[l], vcntq_u8(x));
    }
  }
  if (nq) {
    /* bytes 4l..4l+3 of q0 (q1): pixel l's (l + 4's) partial counts */
    q0 = vpaddq_u8(vpaddq_u8(a[0], a[1]), vpaddq_u8(a[2], a[3]));
    q1 = vpaddq_u8(vpaddq_u8(a[4], a[5]), vpaddq_u8(a[6], a[7]));
  }
  if (tail) {
    const uint8x16_t x0 = xnor_tail_count4(T0a, T0b, ws + 16 * nq, ms + 16 * nq, tail, masked),
                     x1 = xnor_tail_count4(T1a, T1b, ws + 16 * nq, ms + 16 * nq, tail, masked);
    q0 = nq ? vaddq_u8(q0, x0) : x0;
    q1 = nq ? vaddq_u8(q1, x1) : x1;
  }
  return vpaddlq_u8(vpaddq_u8(q0, q1));
}

/* Stores the sign bits of 32 output channels (g0: channels 0-15, g1:
 * 16-31, one 16-bit lane per pixel) of the block's eight pixels into the
 * reader's rows: word w of each pixel's bpp bytes. */
static inline __attribute__((always_inline)) void xnor_store8_bits(uint8_t *rows, int32_t bpp,
                                                                   int32_t w, uint16x8_t g0,
                                                                   uint16x8_t g1) {
  const uint8x16_t lo = vreinterpretq_u8_u16(vzip1q_u16(g0, g1)),
                   hi = vreinterpretq_u8_u16(vzip2q_u16(g0, g1));
  if (bpp == 1) {
    vst1_u8(rows, vmovn_u16(g0));
  } else if (bpp == 2) {
    vst1q_u8(rows, vreinterpretq_u8_u16(g0));
  } else if (bpp == 4) {
    vst1q_u8(rows, lo);
    vst1q_u8(rows + 16, hi);
  } else {
    const int32_t nb = bpp - 4 * w < 4 ? bpp - 4 * w : 4;
    uint8_t wd[32];
    int32_t l;
    vst1q_u8(wd, lo);
    vst1q_u8(wd + 16, hi);
    for (l = 0; l < CARDC_XNOR_BLOCK; l++)
      memcpy(rows + (size_t)l * (size_t)bpp + 4 * (size_t)w, wd + 4 * l, (size_t)nb);
  }
}

/* All output channels of one block of eight pixels whose patches (nq <=
 * CARDC_XNOR_NEON8_CHUNKS chunks) stay in registers; counts, thresholds
 * and the Sign-bits accumulators in 16-bit lanes, one per pixel. */
static inline __attribute__((always_inline)) void xnor_block8_neon(
    const cardc_layer *L, const uint32_t *patch, int32_t rw, const int16_t *kb, float *dst,
    uint8_t *bo, size_t plane, const int nq, const int tail, const int masked, const int ep) {
  uint8x16_t P[CARDC_XNOR_BLOCK][CARDC_XNOR_NEON8_CHUNKS];
  const uint8x16_t T0a = xnor_tails4(patch, rw, nq, tail, 0),
                   T0b = xnor_tails4(patch, rw, nq, tail, 1),
                   T1a = xnor_tails4(patch + 4 * rw, rw, nq, tail, 0),
                   T1b = xnor_tails4(patch + 4 * rw, rw, nq, tail, 1);
  /* L's fields in locals: the stores to dst could alias them otherwise */
  const uint8_t *ws = (const uint8_t *)L->xn_sign;
  const uint8_t *ms = masked ? (const uint8_t *)L->xn_mask : 0;
  const float *mult = L->mult, *bias = L->bias;
  const int32_t oc = L->oc, relu6 = L->act == CARDC_ACT_RELU6;
  const size_t rb = 4 * (size_t)rw;
  int32_t o, c, l;
  for (l = 0; l < CARDC_XNOR_BLOCK; l++)
    for (c = 0; c < nq; c++) P[l][c] = vld1q_u8((const uint8_t *)(patch + l * rw + 4 * c));
  if (ep == XNOR_EP_BITS) {
    /* per 16 channels, the sign of threshold - count shifted in from the
     * top of each pixel's lane (SRI): channel i of the group at bit i */
    const int32_t bpp = oc / 8;
    int32_t w, h;
    for (w = 0; 32 * w < oc; w++) {
      uint16x8_t g[2];
      for (h = 0; h < 2; h++) {
        const int32_t lo = 32 * w + 16 * h, hi = oc < lo + 16 ? oc : lo + 16;
        uint16x8_t acc = vdupq_n_u16(0);
        for (o = lo; o < hi; o++, ws += rb, ms += masked ? rb : 0, kb += CARDC_XNOR_BLOCK) {
          const uint16x8_t cnt = xnor_count8_neon(P, T0a, T0b, T1a, T1b, ws, ms, nq, tail, masked);
          const int16x8_t d = vsubq_s16(vld1q_s16(kb), vreinterpretq_s16_u16(cnt));
          acc = vsriq_n_u16(vreinterpretq_u16_s16(d), acc, 1);
        }
        if (hi > lo && hi - lo < 16) acc = vshlq_u16(acc, vdupq_n_s16((int16_t)(hi - lo - 16)));
        g[h] = acc;
      }
      xnor_store8_bits(bo, bpp, w, g[0], g[1]);
    }
    return;
  }
  for (o = 0; o < oc; o++, ws += rb, ms += masked ? rb : 0, kb += CARDC_XNOR_BLOCK, dst += plane) {
    const int16x8_t cnt =
        vreinterpretq_s16_u16(xnor_count8_neon(P, T0a, T0b, T1a, T1b, ws, ms, nq, tail, masked));
    const int16x8_t k = vld1q_s16(kb);
    if (ep == XNOR_EP_SIGN) {
      const int16x8_t d = vsubq_s16(k, cnt);
      vst1q_f32(dst, xnor_sign_f32(vmovl_s16(vget_low_s16(d))));
      vst1q_f32(dst + 4, xnor_sign_f32(vmovl_high_s16(d)));
    } else {
      /* kept - correction - 2 * count, per pixel (|t| <= 2K fits 16 bits) */
      const int16x8_t t = vsubq_s16(k, vshlq_n_s16(cnt, 1));
      const float32x4_t b = vld1q_dup_f32(bias + o),
                        y0 = xnor_affine_f32(vmovl_s16(vget_low_s16(t)), mult[o], b, ep, relu6),
                        y1 = xnor_affine_f32(vmovl_high_s16(t), mult[o], b, ep, relu6);
      /* both computed before the stores, which could alias mult */
      vst1q_f32(dst, y0);
      vst1q_f32(dst + 4, y1);
    }
  }
}

/* One block of eight pixels: in registers when the patches fit, else as
 * two blocks of four. */
static inline __attribute__((always_inline)) void xnor_block_any_neon(
    const cardc_layer *L, const uint32_t *patch, int32_t rw, const int16_t *kb, float *dst,
    uint8_t *bo, size_t plane, const int nq, const int tail, const int masked, const int ep) {
  if (nq <= CARDC_XNOR_NEON8_CHUNKS) {
    xnor_block8_neon(L, patch, rw, kb, dst, bo, plane, nq, tail, masked, ep);
  } else {
    const size_t bpp = (size_t)(L->oc / 8);
    xnor_block_neon(L, patch, rw, kb, dst, bo, plane, nq, tail, masked, ep);
    xnor_block_neon(L, patch + 4 * rw, rw, kb + 4, dst + 4, bo ? bo + 4 * bpp : 0, plane, nq, tail,
                    masked, ep);
  }
}

#define XNOR_NEON_EP(NQ, TAIL, MASKED)                                                        \
  if (ep == XNOR_EP_BITS)                                                                     \
    xnor_block_any_neon(L, patch, rw, kb, dst, bo, plane, NQ, TAIL, MASKED, XNOR_EP_BITS);    \
  else if (ep == XNOR_EP_SIGN)                                                                \
    xnor_block_any_neon(L, patch, rw, kb, dst, bo, plane, NQ, TAIL, MASKED, XNOR_EP_SIGN);    \
  else if (ep == XNOR_EP_NONE)                                                                \
    xnor_block_any_neon(L, patch, rw, kb, dst, bo, plane, NQ, TAIL, MASKED, XNOR_EP_NONE);    \
  else                                                                                        \
    xnor_block_any_neon(L, patch, rw, kb, dst, bo, plane, NQ, TAIL, MASKED, XNOR_EP_RELU);

/* One function per chunk count (its tail, mask and epilogue variants
 * inlined): in one function for all, GCC keeps the patch arrays in memory. */
#define XNOR_NEON_FN(NQ)                                                                      \
  static void CARDC_NOINLINE xnor_neon_##NQ(const cardc_layer *L, const uint32_t *patch,      \
                                            int32_t rw, const int16_t *kb, float *dst,        \
                                            uint8_t *bo, size_t plane, int ep) {              \
    if (L->xn_tail == 1) {                                                                    \
      if (L->xn_mask) {                                                                       \
        XNOR_NEON_EP(NQ, 1, 1)                                                                \
      } else {                                                                                \
        XNOR_NEON_EP(NQ, 1, 0)                                                                \
      }                                                                                       \
    } else if (L->xn_tail == 2) {                                                             \
      if (L->xn_mask) {                                                                       \
        XNOR_NEON_EP(NQ, 2, 1)                                                                \
      } else {                                                                                \
        XNOR_NEON_EP(NQ, 2, 0)                                                                \
      }                                                                                       \
    } else if (L->xn_mask) {                                                                  \
      XNOR_NEON_EP(NQ, 0, 1)                                                                  \
    } else {                                                                                  \
      XNOR_NEON_EP(NQ, 0, 0)                                                                  \
    }                                                                                         \
  }
XNOR_NEON_FN(0)
XNOR_NEON_FN(1)
XNOR_NEON_FN(2)
XNOR_NEON_FN(3)
XNOR_NEON_FN(4)
#define XNOR_NEON_CASE(NQ)                                                                    \
  case NQ:                                                                                    \
    xnor_neon_##NQ(L, patch, rw, kb, dst, bo, plane, ep);                                     \
    break;
#endif

/* Every output channel of one block of n pixels, in portable C: per
 * channel and pixel, XOR (AND) and POPCNT over the chunks' words
 * (cardc_xword) and the tail's 32-bit words. */
static CARDC_XNOR_INLINE void xnor_block_portable(const cardc_layer *L, const uint32_t *patch,
                                                  int32_t rw, const int16_t *kb, float *dst,
                                                  uint8_t *bits_out, size_t plane, int32_t n,
                                                  const int32_t nq, const int32_t tail,
                                                  const int masked) {
  const int32_t nw = (int32_t)((size_t)(16 * nq) / sizeof(cardc_xword));
  const size_t bpp = (size_t)(L->oc / 8);
  int32_t o, l, w;
  for (o = 0; o < L->oc; o++) {
    const uint32_t *ws = L->xn_sign + (size_t)o * (size_t)rw;
    const uint32_t *ms = masked ? L->xn_mask + (size_t)o * (size_t)rw : 0;
    uint32_t cnt[CARDC_XNOR_BLOCK];
    for (l = 0; l < n; l++) {
      const uint32_t *p = patch + (size_t)l * (size_t)rw;
      uint32_t c = 0;
      for (w = 0; w < nw; w++) {
        cardc_xword a, b;
        memcpy(&a, (const uint8_t *)p + (size_t)w * sizeof a, sizeof a);
        memcpy(&b, (const uint8_t *)ws + (size_t)w * sizeof b, sizeof b);
        a ^= b;
        if (masked) {
          memcpy(&b, (const uint8_t *)ms + (size_t)w * sizeof b, sizeof b);
          a &= b;
        }
        c += CARDC_POPCOUNT_XWORD(a);
      }
      for (w = 4 * nq; w < 4 * nq + tail; w++) {
        const uint32_t x = p[w] ^ ws[w];
        c += CARDC_POPCOUNT(masked ? x & ms[w] : x);
      }
      cnt[l] = c;
    }
    if (L->xn_out_bits) {
      /* bit o of the pixel's ic/8 bytes set where the output is -1 */
      for (l = 0; l < n; l++)
        if ((int32_t)cnt[l] > kb[CARDC_XNOR_BLOCK * (size_t)o + (size_t)l])
          bits_out[(size_t)l * bpp + (size_t)(o / 8)] |= (uint8_t)(1u << (o % 8));
    } else {
      xnor_store(L, o, cnt, kb + CARDC_XNOR_BLOCK * (size_t)o, dst + (size_t)o * plane, n);
    }
  }
}

#define XNOR_PORTABLE_CASE(NQ, TAIL)                                                          \
  case NQ * 3 + TAIL:                                                                         \
    if (L->xn_mask)                                                                           \
      xnor_block_portable(L, patch, rw, kb, dst, bits_out, plane, n, NQ, TAIL, 1);            \
    else                                                                                      \
      xnor_block_portable(L, patch, rw, kb, dst, bits_out, plane, n, NQ, TAIL, 0);            \
    break;

/* Every output channel of one block of eight pixels (n of them valid):
 * floats at dst (channel planes `plane` apart), or with xn_out_bits the
 * bits at `bits_out`, the reader's byte rows of the block's first pixel. */
static void CARDC_NOINLINE xnor_block(const cardc_layer *L, const uint32_t *patch, int32_t rw,
                                      const int16_t *kb, float *dst, uint8_t *bits_out,
                                      size_t plane, int32_t n, float *partial) {
  const size_t bpp = (size_t)(L->oc / 8);
#ifdef CARDC_XNOR_NEON
  if (L->xn_chunks <= CARDC_XNOR_NEON_CHUNKS) {
    int32_t o, l;
    const int ep = L->xn_out_bits             ? XNOR_EP_BITS
                   : L->act == CARDC_ACT_SIGN ? XNOR_EP_SIGN
                   : L->act == CARDC_ACT_NONE ? XNOR_EP_NONE
                                              : XNOR_EP_RELU;
    /* a partial block goes through `partial` (8 lanes per channel, or 8
     * pixels' bytes) */
    float *out = n == CARDC_XNOR_BLOCK ? dst : partial;
    uint8_t *bo = n == CARDC_XNOR_BLOCK ? bits_out : (uint8_t *)partial;
    const size_t pl = n == CARDC_XNOR_BLOCK ? plane : CARDC_XNOR_BLOCK;
    {
      float *dst = out;
      size_t plane = pl;
      switch (L->xn_chunks) {
        XNOR_NEON_CASE(0)
        XNOR_NEON_CASE(1)
        XNOR_NEON_CASE(2)
        XNOR_NEON_CASE(3)
        XNOR_NEON_CASE(4)
        default:
          break;
      }
    }
    if (n < CARDC_XNOR_BLOCK) {
      if (L->xn_out_bits)
        memcpy(bits_out, partial, (size_t)n * bpp);
      else
        for (o = 0; o < L->oc; o++)
          for (l = 0; l < n; l++)
            dst[(size_t)o * plane + (size_t)l] = partial[CARDC_XNOR_BLOCK * o + l];
    }
    return;
  }
#endif
  (void)partial;
  if (L->xn_out_bits) memset(bits_out, 0, (size_t)n * bpp);
  /* the common shapes with the loops' bounds known */
  switch (L->xn_chunks * 3 + L->xn_tail) {
    XNOR_PORTABLE_CASE(0, 1)
    XNOR_PORTABLE_CASE(0, 2)
    XNOR_PORTABLE_CASE(1, 0)
    XNOR_PORTABLE_CASE(1, 1)
    XNOR_PORTABLE_CASE(1, 2)
    XNOR_PORTABLE_CASE(2, 0)
    XNOR_PORTABLE_CASE(2, 1)
    XNOR_PORTABLE_CASE(2, 2)
    XNOR_PORTABLE_CASE(3, 0)
    XNOR_PORTABLE_CASE(3, 1)
    XNOR_PORTABLE_CASE(3, 2)
    XNOR_PORTABLE_CASE(4, 0)
    XNOR_PORTABLE_CASE(4, 1)
    XNOR_PORTABLE_CASE(4, 2)
    default:
      xnor_block_portable(L, patch, rw, kb, dst, bits_out, plane, n, L->xn_chunks, L->xn_tail,
                          L->xn_mask != 0);
  }
}

/* The blocks of an xnor layer whose patches are byte rows (a multiple of
 * 8 input channels): each pixel's patch is kh copies of `run` bytes, with
 * the run and kh constants in the specialized copies (xnor). Geometry in
 * locals: the patch's byte stores may alias anything, L included. */
static inline __attribute__((always_inline)) void xnor_row_blocks(
    const cardc_layer *L, const uint8_t *rows, uint32_t *patch, int32_t rw, const int16_t *kt,
    int32_t ncp, float *out, uint8_t *bout, float *partial, const int32_t run_c,
    const int32_t kh_c) {
  const int32_t oh = L->oh, ow = L->ow, oc = L->oc, has_corr = L->xn_rowc != 0;
  const size_t obpp = (size_t)(L->oc / 8), opitch = (size_t)L->out_wq * obpp;
  const size_t obase = ((size_t)L->out_ph * (size_t)L->out_wq + (size_t)L->out_pw) * obpp;
  const int32_t run = run_c ? run_c : L->kw * L->ic / 8, kh = kh_c ? kh_c : L->kh;
  const size_t rowlen = (size_t)L->sw * (size_t)L->wq * (size_t)(L->ic / 8);
  const size_t row_step = (size_t)L->sh * rowlen, col_step = (size_t)L->sw * (size_t)(L->ic / 8);
  const size_t out_row = (size_t)L->out_row, out_base = (size_t)L->out_base,
               plane = (size_t)L->out_plane, rwb = 4 * (size_t)rw;
  const uint8_t *rowcs = L->xn_rowc, *blockcs = L->xn_blockc;
  uint8_t *pb = (uint8_t *)patch;
  int32_t oy, ox0, l, ky;
  for (oy = 0; oy < oh; oy++) {
    const int32_t rowc = has_corr ? rowcs[oy] : 0;
    const uint8_t *srow = rows + (size_t)oy * row_step;
    float *orow = out + (size_t)oy * out_row + out_base;
    for (ox0 = 0; ox0 < ow; ox0 += CARDC_XNOR_BLOCK) {
      const int32_t n = ow - ox0 < CARDC_XNOR_BLOCK ? ow - ox0 : CARDC_XNOR_BLOCK;
      const int32_t cp = has_corr ? blockcs[ox0 / CARDC_XNOR_BLOCK] : 0;
      const uint8_t *src = srow + (size_t)ox0 * col_step;
      uint8_t *d = pb;
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC unroll 8
#endif
      for (l = 0; l < CARDC_XNOR_BLOCK; l++, d += rwb) {
        if (kh_c == 3 && run_c) {
          /* the three kernel rows' runs, each moved in whole 8/16-byte
           * words that run past it (later runs overwrite the excess, the
           * last one's is cleared): the rows are followed by `partial`,
           * the patch has room up to its rw words */
          const size_t m = run_c <= 8 ? 8 : run_c <= 16 ? 16 : run_c <= 32 ? 32 : 48;
          memcpy(d, src, m);
          memcpy(d + run_c, src + rowlen, m);
          memcpy(d + 2 * run_c, src + 2 * rowlen, m);
          if (m > (size_t)run_c) memset(d + 3 * run_c, 0, m - (size_t)run_c);
        } else {
          for (ky = 0; ky < kh; ky++)
            xnor_copy(d + (size_t)ky * (size_t)run, src + (size_t)ky * rowlen, run);
        }
        if (l + 1 < n) src += col_step;
      }
      xnor_block(L, patch, rw,
                 kt + ((size_t)rowc * (size_t)ncp + (size_t)cp) * (size_t)oc * CARDC_XNOR_BLOCK,
                 orow + ox0, bout ? bout + obase + (size_t)oy * opitch + (size_t)ox0 * obpp : 0,
                 plane, n, partial);
    }
  }
}

/* Zeroes the border positions of the reader's byte rows (xn_out_bits):
 * zero padding packs as clear bits. */
static void xnor_zero_row_borders(const cardc_layer *L, uint8_t *rows) {
  const size_t bpp = (size_t)(L->oc / 8), wq = (size_t)L->out_wq, pw = (size_t)L->out_pw;
  int32_t y;
  for (y = 0; y < L->out_hp; y++) {
    uint8_t *r = rows + (size_t)y * wq * bpp;
    if (y < L->out_ph || y >= L->out_ph + L->oh) {
      memset(r, 0, wq * bpp);
    } else {
      memset(r, 0, pw * bpp);
      memset(r + (pw + (size_t)L->ow) * bpp, 0, (wq - pw - (size_t)L->ow) * bpp);
    }
  }
}

/* RAM layout of xn_bits: the packed signs ([ceil(ic/32)][positions]
 * words), a block's patches (rw words each), with a multiple of 8 channels
 * the byte rows (xnor_rows), then CARDC_XNOR_BLOCK * oc floats for a
 * partial block's outputs.
 * cardc's xnor::ram_words sizes it. With xn_in_rows the input `s` is the
 * byte rows already; with xn_out_bits `out` receives the reader's. */
static void CARDC_NOINLINE xnor(const cardc_layer *L, const float *s, float *out) {
  const size_t positions = (size_t)L->sw * (size_t)L->hp * (size_t)L->wq;
  const int32_t rw = 4 * L->xn_chunks + (L->xn_tail ? 4 : 0), bytes = xnor_bytes(L);
  const int32_t ncp = L->xn_rowc ? L->xn_colpatterns : 1;
  const int16_t *kt = L->xn_kt;
  uint32_t *bits = L->xn_bits;
  uint32_t *patch = bits + positions * (size_t)((L->ic + 31) / 32);
  uint8_t *rows = (uint8_t *)(patch + CARDC_XNOR_BLOCK * (size_t)rw);
  float *partial = (float *)(patch + CARDC_XNOR_BLOCK * (size_t)rw +
                             (bytes ? (positions * (size_t)(L->ic / 8) + 3) / 4 : 0));
  uint8_t *bout = L->xn_out_bits ? (uint8_t *)(void *)out : 0;
  if (bout) xnor_zero_row_borders(L, bout);
  if (bytes) {
    const int32_t run = L->kw * L->ic / 8;
    const uint8_t *src = rows;
    if (L->xn_in_rows) {
      src = (const uint8_t *)(const void *)s;
    } else if (L->sw == 1) {
      xnor_pack_rows(L, s, rows, positions);
    } else {
      xnor_pack_input(L, s, bits, positions);
      xnor_rows(L, bits, positions, rows);
    }
    /* bytes past the patch's kh*kw*ic/8 stay zero */
    memset(patch, 0, sizeof(uint32_t) * CARDC_XNOR_BLOCK * (size_t)rw);
    /* 3x3 kernels on 16, 32, 64 and 128 channels: the copies' sizes known */
    if (L->kh == 3 && run == 6)
      xnor_row_blocks(L, src, patch, rw, kt, ncp, out, bout, partial, 6, 3);
    else if (L->kh == 3 && run == 12)
      xnor_row_blocks(L, src, patch, rw, kt, ncp, out, bout, partial, 12, 3);
    else if (L->kh == 3 && run == 24)
      xnor_row_blocks(L, src, patch, rw, kt, ncp, out, bout, partial, 24, 3);
    else if (L->kh == 3 && run == 48)
      xnor_row_blocks(L, src, patch, rw, kt, ncp, out, bout, partial, 48, 3);
    else
      xnor_row_blocks(L, src, patch, rw, kt, ncp, out, bout, partial, 0, 0);
    return;
  }
  xnor_pack_input(L, s, bits, positions);
  {
    const int32_t oh = L->oh, ow = L->ow, oc = L->oc, has_corr = L->xn_rowc != 0;
    const size_t out_row = (size_t)L->out_row, out_base = (size_t)L->out_base,
                 plane = (size_t)L->out_plane, sh_wq = (size_t)L->sh * (size_t)L->wq;
    const size_t obpp = (size_t)(L->oc / 8), opitch = (size_t)L->out_wq * obpp;
    const size_t obase = ((size_t)L->out_ph * (size_t)L->out_wq + (size_t)L->out_pw) * obpp;
    int32_t oy, ox0, l;
    for (oy = 0; oy < oh; oy++) {
      const int32_t rowc = has_corr ? L->xn_rowc[oy] : 0;
      for (ox0 = 0; ox0 < ow; ox0 += CARDC_XNOR_BLOCK) {
        const int32_t n = ow - ox0 < CARDC_XNOR_BLOCK ? ow - ox0 : CARDC_XNOR_BLOCK;
        const int32_t cp = has_corr ? L->xn_blockc[ox0 / CARDC_XNOR_BLOCK] : 0;
        for (l = 0; l < CARDC_XNOR_BLOCK; l++)
          xnor_patch(L, bits, positions, (size_t)oy * sh_wq + (size_t)(ox0 + (l < n ? l : n - 1)),
                     patch + (size_t)l * (size_t)rw, rw);
        xnor_block(L, patch, rw,
                   kt + ((size_t)rowc * (size_t)ncp + (size_t)cp) * (size_t)oc * CARDC_XNOR_BLOCK,
                   out + (size_t)oy * out_row + (size_t)ox0 + out_base,
                   bout ? bout + obase + (size_t)oy * opitch + (size_t)ox0 * obpp : 0, plane, n,
                   partial);
      }
    }
  }
}

static uint32_t rice_bit(const uint32_t *w, uint32_t *at) {
  const uint32_t b = (w[*at >> 5] >> (*at & 31u)) & 1u;
  (*at)++;
  return b;
}

/* One Rice code (parameter k) from bit `at` on; *neg receives the bit after
 * it without consuming it (a kept weight's sign; nothing after a row's
 * terminating gap). The stream ends with a word of padding,
 * so the 32-bit window can always read two words; codes that do not fit
 * the window are read bit by bit. */
static uint32_t rice_code(const uint32_t *w, uint32_t *at, uint32_t k, uint32_t *neg) {
  const uint32_t i = *at >> 5, sh = *at & 31u;
  const uint32_t win = sh ? (w[i] >> sh) | (w[i + 1] << (32u - sh)) : w[i];
  uint32_t q = 0, low = 0, b;
  if (~win != 0u) {
    q = (uint32_t)CARDC_CTZ(~win);
    if (q + 2u + k < 32u) {
      *at += q + 1u + k;
      *neg = (win >> (q + 1u + k)) & 1u;
      return (q << k) | ((win >> (q + 1u)) & ((1u << k) - 1u));
    }
  }
  q = 0;
  while (rice_bit(w, at)) q++;
  for (b = 0; b < k; b++) low |= rice_bit(w, at) << b;
  *neg = (w[*at >> 5] >> (*at & 31u)) & 1u;
  return (q << k) | low;
}

/* Decodes a Rice-coded layer into L->rice_counts ([oc] kept weights per
 * output channel) and L->rice_off (per kept weight its scratch offset, bit
 * 31 set for -1), walking the patch position incrementally. */
static void rice_decode(const cardc_layer *L) {
  const uint32_t *w = L->rice, k = (uint32_t)L->rice_k;
  const int32_t positions = L->kh * L->kw;
  const size_t cstride = (size_t)L->sw * (size_t)L->hp * (size_t)L->wq;
  uint32_t at = 0;
  size_t j = 0;
  int32_t o;
  for (o = 0; o < L->oc; o++) {
    int32_t ci = -1, pos = 0; /* the previous kept index, as (position, channel) */
    uint32_t n = 0;
    for (;;) {
      uint32_t neg;
      ci += (int32_t)rice_code(w, &at, k, &neg) + 1;
      while (ci >= L->ic && pos < positions) {
        ci -= L->ic;
        pos++;
      }
      if (pos >= positions) break; /* the row's terminating gap */
      at++;                        /* the sign bit */
      L->rice_off[j++] =
          (uint32_t)((size_t)ci * cstride + (size_t)L->poff[pos]) | (neg << 31);
      n++;
    }
    L->rice_counts[o] = n;
  }
}

/* Zeroes the borders of a handed-off output (the interior is written by
 * the kernel): per channel the rows above the image and the first row's
 * left border, between image rows the right border and the next row's
 * left border (adjacent), and after the last row everything to the
 * plane's end. */
static void CARDC_NO_MEMSET zero_borders(const cardc_layer *L, float *out) {
  int32_t c, y;
  const int32_t hp = L->out_hp, wq = L->out_wq, ph = L->out_ph, pw = L->out_pw, oh = L->oh;
  const size_t psize = (size_t)hp * (size_t)wq, right = (size_t)pw + (size_t)L->ow;
  if (row_borders_in_stores(L)) {
    /* the rows above and below the image; the kernel writes the rest */
    const size_t below = (size_t)(ph + oh) * (size_t)wq;
    for (c = 0; c < L->oc; c++) {
      float *plane = out + (size_t)c * (size_t)L->out_plane;
      zero_floats(plane, (size_t)ph * (size_t)wq);
      zero_floats(plane + below, psize - below);
    }
    return;
  }
  for (c = 0; c < L->oc; c++) {
    float *plane = out + (size_t)c * (size_t)L->out_plane;
    zero_floats(plane, (size_t)ph * (size_t)wq + (size_t)pw);
    for (y = ph; y < ph + oh; y++) {
      const size_t at = (size_t)y * (size_t)wq + right;
      const size_t end = y + 1 < ph + oh ? (size_t)(y + 1) * (size_t)wq + (size_t)pw : psize;
      zero_floats(plane + at, end - at);
    }
  }
}

/* A matrix layer; res: NULL, or the residual a fused Add sums into the
 * output (never an xnor layer: cardc's layout::fuse_residual_adds). */
static void mat(const cardc_layer *L, const float *in, const float *res, float *out,
                float *scratch) {
  const float *s = in;
  if (!L->in_padded) {
    pad_input(L, in, scratch);
    s = scratch;
  }
  if (L->out_wq > 0 && !L->xn_out_bits) zero_borders(L, out);
  switch (L->format) {
    case CARDC_F32:
      dense_f32(L, L->w_f32, s, res, out);
      break;
    case CARDC_F16:
      dense_f16(L, L->w_f16, s, res, out);
      break;
    case CARDC_I8:
      dense_i8(L, L->w_i8, s, res, out);
      break;
    case CARDC_BINARY:
      binary(L, s, res, out);
      break;
    case CARDC_BINARY_RICE:
      rice_decode(L);
      lists(L, s, res, out);
      break;
    case CARDC_XNOR:
      xnor(L, s, out);
      break;
    default: /* sparse, sparse8, binary lists */
      lists(L, s, res, out);
      break;
  }
}

void cardc_mat(const cardc_layer *L, const float *in, float *out, float *scratch) {
  mat(L, in, 0, out, scratch);
}

void cardc_mat_residual(const cardc_layer *L, const float *in, const float *res, float *out,
                        float *scratch) {
  mat(L, in, res, out, scratch);
}

void cardc_normalize(const uint8_t *img, const float *lut, int32_t c, int32_t pixels,
                     float *out) {
  int32_t ch, p;
  for (ch = 0; ch < c; ch++)
    for (p = 0; p < pixels; p++) {
      size_t i = (size_t)ch * (size_t)pixels + (size_t)p;
      out[i] = lut[(size_t)ch * 256u + img[i]];
    }
}

void cardc_add(const float *a, const float *b, float *out, int32_t n, int32_t act) {
  int32_t i;
  for (i = 0; i < n; i++) out[i] = act_apply(a[i] + b[i], act);
}

void cardc_affine(const float *in, float *out, const float *scale, const float *shift,
                  int32_t pixels, int32_t c, int32_t act) {
  int32_t p, ch;
  for (ch = 0; ch < c; ch++)
    for (p = 0; p < pixels; p++) {
      size_t i = (size_t)ch * (size_t)pixels + (size_t)p;
      out[i] = act_apply(in[i] * scale[ch] + shift[ch], act);
    }
}

void cardc_activation(const float *in, float *out, int32_t n, int32_t act) {
  int32_t i;
  for (i = 0; i < n; i++) out[i] = act_apply(in[i], act);
}

static void pool(const float *in, float *out, int32_t ih, int32_t iw, int32_t c, int32_t oh,
                 int32_t ow, int32_t kh, int32_t kw, int32_t sh, int32_t sw, int32_t ph,
                 int32_t pw, int32_t is_max) {
  int32_t oy, ox, iy, ix, ch;
  float inv = 1.0f / (float)(kh * kw);
  for (ch = 0; ch < c; ch++) {
    const float *x = in + (size_t)ch * (size_t)ih * (size_t)iw;
    float *y = out + (size_t)ch * (size_t)oh * (size_t)ow;
    for (oy = 0; oy < oh; oy++) {
      int32_t y0 = oy * sh - ph, y1 = oy * sh + kh - ph;
      if (y0 < 0) y0 = 0;
      if (y1 > ih) y1 = ih;
      for (ox = 0; ox < ow; ox++) {
        int32_t x0 = ox * sw - pw, x1 = ox * sw + kw - pw;
        float acc = is_max ? -INFINITY : 0.0f;
        if (x0 < 0) x0 = 0;
        if (x1 > iw) x1 = iw;
        for (iy = y0; iy < y1; iy++)
          for (ix = x0; ix < x1; ix++) {
            float v = x[(size_t)iy * (size_t)iw + (size_t)ix];
            if (is_max) {
              if (v > acc) acc = v;
            } else {
              acc += v;
            }
          }
        y[(size_t)oy * (size_t)ow + (size_t)ox] = is_max ? acc : acc * inv;
      }
    }
  }
}

void cardc_maxpool(const float *in, float *out, int32_t ih, int32_t iw, int32_t c,
                   int32_t oh, int32_t ow, int32_t kh, int32_t kw, int32_t sh, int32_t sw,
                   int32_t ph, int32_t pw) {
  pool(in, out, ih, iw, c, oh, ow, kh, kw, sh, sw, ph, pw, 1);
}

void cardc_avgpool(const float *in, float *out, int32_t ih, int32_t iw, int32_t c,
                   int32_t oh, int32_t ow, int32_t kh, int32_t kw, int32_t sh, int32_t sw,
                   int32_t ph, int32_t pw) {
  pool(in, out, ih, iw, c, oh, ow, kh, kw, sh, sw, ph, pw, 0);
}

void cardc_global_avgpool(const float *in, float *out, int32_t plane, int32_t pixels,
                          int32_t c) {
  int32_t p, ch;
  float inv = 1.0f / (float)(pixels > 0 ? pixels : 1);
  for (ch = 0; ch < c; ch++) {
    float acc = 0.0f;
    for (p = 0; p < plane; p++) acc += in[(size_t)ch * (size_t)plane + (size_t)p];
    out[ch] = acc * inv;
  }
}
