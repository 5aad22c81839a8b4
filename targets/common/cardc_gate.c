/* cardc CARD-Deck spectral gate (see cardc_gate.h). */
#include "cardc_gate.h"

#include <math.h>
#include <string.h>

/* Natural logarithm of a positive normal float, within a few ulp of logf
 * (x = 2^e * m, m in [sqrt(1/2), sqrt(2)); log m = 2 atanh(s) with
 * s = (m-1)/(m+1), |s| < 0.172, to s^9). Branch-free so the amplitude
 * loop vectorizes (a libm call per bin was a third of the gate's time). */
static float log_pos(float x) {
  uint32_t u;
  memcpy(&u, &x, sizeof u);
  const int32_t e = (int32_t)(u - 0x3f3504f3u) >> 23;
  u -= (uint32_t)e << 23;
  float m;
  memcpy(&m, &u, sizeof m);
  const float s = (m - 1.0f) / (m + 1.0f), z = s * s;
  const float p = 1.0f + z * (1.0f / 3 + z * (1.0f / 5 + z * (1.0f / 7 + z * (1.0f / 9))));
  return 2.0f * s * p + (float)e * 0.693147180559945f;
}

/* In-place forward DFT of n complex values at stride s. cs/sn are the
 * n*n tables cos/sin(2*pi*a*b/n); their row 1 holds the twiddle factors.
 * Powers of two take an iterative radix-2 FFT (n/2*log2(n) butterflies),
 * other sizes the direct sum through the tr/ti scratch (n values each). */
static void dft1(float *re, float *im, int32_t n, int32_t s, const float *cs, const float *sn,
                 float *tr, float *ti) {
  if (n > 1 && (n & (n - 1)) == 0) {
    for (int32_t i = 1, j = 0; i < n; i++) {
      int32_t bit = n >> 1;
      for (; j & bit; bit >>= 1) j ^= bit;
      j ^= bit;
      if (i < j) {
        float t = re[i * s]; re[i * s] = re[j * s]; re[j * s] = t;
        t = im[i * s]; im[i * s] = im[j * s]; im[j * s] = t;
      }
    }
    for (int32_t len = 2; len <= n; len <<= 1) {
      const int32_t half = len >> 1, step = n / len;
      for (int32_t i = 0; i < n; i += len) {
        for (int32_t j = 0; j < half; j++) {
          const float wr = cs[n + j * step], wi = -sn[n + j * step];
          float *ar = re + (i + j) * s, *ai = im + (i + j) * s;
          float *br = re + (i + j + half) * s, *bi = im + (i + j + half) * s;
          const float vr = *br * wr - *bi * wi, vi = *br * wi + *bi * wr;
          *br = *ar - vr; *bi = *ai - vi;
          *ar += vr; *ai += vi;
        }
      }
    }
    return;
  }
  for (int32_t k = 0; k < n; k++) {
    float sr = 0.0f, si = 0.0f;
    for (int32_t t = 0; t < n; t++) {
      const float c = cs[k * n + t], sv = sn[k * n + t];
      const float a = re[t * s], b = im[t * s];
      sr += a * c + b * sv; /* (a + ib)(c - i sv) */
      si += b * c - a * sv;
    }
    tr[k] = sr;
    ti[k] = si;
  }
  for (int32_t k = 0; k < n; k++) {
    re[k * s] = tr[k];
    im[k * s] = ti[k];
  }
}

/* In-place h-point FFT (h a power of two) down each of the first `cols`
 * columns of an h x w plane: the butterflies combine whole row segments,
 * so the inner loop runs over contiguous columns and vectorizes. */
static void fft_columns(float *re, float *im, int32_t h, int32_t w, int32_t cols, const float *cs,
                        const float *sn) {
  for (int32_t i = 1, j = 0; i < h; i++) {
    int32_t bit = h >> 1;
    for (; j & bit; bit >>= 1) j ^= bit;
    j ^= bit;
    if (i < j) {
      for (int32_t c = 0; c < cols; c++) {
        float t = re[i * w + c]; re[i * w + c] = re[j * w + c]; re[j * w + c] = t;
        t = im[i * w + c]; im[i * w + c] = im[j * w + c]; im[j * w + c] = t;
      }
    }
  }
  for (int32_t len = 2; len <= h; len <<= 1) {
    const int32_t half = len >> 1, step = h / len;
    for (int32_t i = 0; i < h; i += len) {
      for (int32_t j = 0; j < half; j++) {
        const float wr = cs[h + j * step], wi = -sn[h + j * step];
        float *restrict ar = re + (i + j) * w, *restrict ai = im + (i + j) * w;
        float *restrict br = re + (i + j + half) * w, *restrict bi = im + (i + j + half) * w;
        for (int32_t c = 0; c < cols; c++) {
          const float vr = br[c] * wr - bi[c] * wi, vi = br[c] * wi + bi[c] * wr;
          br[c] = ar[c] - vr;
          bi[c] = ai[c] - vi;
          ar[c] += vr;
          ai[c] += vi;
        }
      }
    }
  }
}

/* (k + n/2) mod n for 0 <= k < n, without a division (this runs per bin). */
static int32_t centered(int32_t k, int32_t n) {
  const int32_t c = k + n / 2;
  return c >= n ? c - n : c;
}

/* d[centered (ky, kx)] = log(|X| / sqrt(h*w) + 1e-3) - reference there. */
static void deviate(const cardc_gate *g, float *d, const float *ref, int32_t ky, int32_t kx,
                    float a, float b, float scale) {
  const int32_t i = centered(ky, g->h) * g->w + centered(kx, g->w);
  d[i] = log_pos(sqrtf(a * a + b * b) * scale + 1e-3f) - ref[i];
}

/* The deviation of one channel for power-of-two sides, using that the
 * input is real: two rows go through one complex FFT (row y as the real
 * part, row y+1 as the imaginary part) and are separated by symmetry,
 * and only the columns kx <= w/2 are transformed, since
 * X[ky][kx] = conj(X[-ky][-kx]); the amplitude (and its logarithm) of the
 * other half is the mirrored one. About half the work of the full 2-D FFT. */
static void deviation_real(const cardc_gate *g, const uint8_t *px, float *d, const float *ref,
                           float *re, float *im, float scale) {
  const int32_t h = g->h, w = g->w, half = w / 2;
  for (int32_t y = 0; y < h; y += 2) {
    float *zr = re + y * w, *zi = im + y * w;
    float *br = re + (y + 1) * w, *bi = im + (y + 1) * w;
    for (int32_t x = 0; x < w; x++) {
      zr[x] = (float)px[y * w + x] * (1.0f / 255.0f);
      zi[x] = (float)px[(y + 1) * w + x] * (1.0f / 255.0f);
    }
    dft1(zr, zi, w, 1, g->cos_w, g->sin_w, 0, 0);
    /* A[k] = (Z[k] + conj Z[-k]) / 2 (row y), B[k] = (Z[k] - conj Z[-k]) / 2i
     * (row y+1), for k <= w/2; Z[-k] sits at w-k >= w/2, not yet overwritten. */
    for (int32_t k = 0; k <= half; k++) {
      const int32_t nk = k == 0 ? 0 : w - k;
      const float ar = zr[k], ai = zi[k], cr = zr[nk], ci = -zi[nk];
      zr[k] = 0.5f * (ar + cr);
      zi[k] = 0.5f * (ai + ci);
      br[k] = 0.5f * (ai - ci);
      bi[k] = -0.5f * (ar - cr);
    }
  }
  fft_columns(re, im, h, w, half + 1, g->cos_h, g->sin_h);
  /* Log-amplitudes of the computed half, in place, then centered (twice
   * for the columns whose mirror is not computed). */
  for (int32_t ky = 0; ky < h; ky++) {
    float *lr = re + ky * w;
    const float *li = im + ky * w;
    for (int32_t kx = 0; kx <= half; kx++)
      lr[kx] = log_pos(sqrtf(lr[kx] * lr[kx] + li[kx] * li[kx]) * scale + 1e-3f);
  }
  for (int32_t ky = 0; ky < h; ky++) {
    const int32_t cy = centered(ky, h) * w, my = centered(ky == 0 ? 0 : h - ky, h) * w;
    for (int32_t kx = 0; kx <= half; kx++) {
      const float v = re[ky * w + kx];
      const int32_t i = cy + centered(kx, w);
      d[i] = v - ref[i];
      if (kx > 0 && kx < half) {
        const int32_t j = my + centered(w - kx, w);
        d[j] = v - ref[j];
      }
    }
  }
}

/* Centered log-amplitude deviation of one image into dev[c*h*w]; re/im are
 * h*w planes, tr/ti max(h, w) scratch values each. */
static void deviation(const cardc_gate *g, const uint8_t *image, float *dev, float *re,
                      float *im, float *tr, float *ti) {
  const int32_t h = g->h, w = g->w, plane = h * w;
  const float scale = 1.0f / sqrtf((float)plane);
  const int pow2 = h > 1 && w > 1 && (h & (h - 1)) == 0 && (w & (w - 1)) == 0;
  for (int32_t ch = 0; ch < g->c; ch++) {
    const uint8_t *px = image + ch * plane;
    float *d = dev + ch * plane;
    const float *ref = g->reference + ch * plane;
    if (pow2) {
      deviation_real(g, px, d, ref, re, im, scale);
    } else {
      for (int32_t i = 0; i < plane; i++) {
        re[i] = (float)px[i] * (1.0f / 255.0f);
        im[i] = 0.0f;
      }
      for (int32_t y = 0; y < h; y++)
        dft1(re + y * w, im + y * w, w, 1, g->cos_w, g->sin_w, tr, ti);
      for (int32_t x = 0; x < w; x++) dft1(re + x, im + x, h, w, g->cos_h, g->sin_h, tr, ti);
      for (int32_t ky = 0; ky < h; ky++)
        for (int32_t kx = 0; kx < w; kx++)
          deviate(g, d, ref, ky, kx, re[ky * w + kx], im[ky * w + kx], scale);
    }
    d[(h / 2) * w + w / 2] = 0.0f;
  }
}

int32_t cardc_gate_select(const cardc_gate *g, const uint8_t *image, float *work,
                          int32_t *chosen) {
  const int32_t n = g->c * g->h * g->w, plane = g->h * g->w;
  const int32_t side = g->h > g->w ? g->h : g->w;
  float *dev = work, *re = work + n, *im = re + plane, *tr = im + plane, *ti = tr + side;
  float *dist = ti + side;
  deviation(g, image, dev, re, im, tr, ti);
  for (int32_t m = 0; m < g->members; m++) {
    const float *s = g->signatures + (int64_t)m * n;
    if (g->metric == CARDC_GATE_COSINE) {
      /* Four running sums per quantity (vectorizable), added at the end. */
      double ab[4] = {0.0}, aa[4] = {0.0}, bb[4] = {0.0};
      for (int32_t i = 0; i < n; i++) {
        ab[i & 3] += (double)dev[i] * s[i];
        aa[i & 3] += (double)dev[i] * dev[i];
        bb[i & 3] += (double)s[i] * s[i];
      }
      const double sab = (ab[0] + ab[1]) + (ab[2] + ab[3]);
      const double saa = (aa[0] + aa[1]) + (aa[2] + aa[3]);
      const double sbb = (bb[0] + bb[1]) + (bb[2] + bb[3]);
      dist[m] =
          (saa == 0.0 || sbb == 0.0) ? 1.0f : (float)(1.0 - sab / (sqrt(saa) * sqrt(sbb)));
    } else {
      /* Eight running sums (one vector), added at the end. */
      float part[8] = {0.0f}, sum = 0.0f;
      int32_t i = 0;
      for (; i + 8 <= n; i += 8)
        for (int32_t l = 0; l < 8; l++) part[l] += fabsf(dev[i + l] - s[i + l]);
      for (; i < n; i++) part[i & 7] += fabsf(dev[i] - s[i]);
      for (int32_t l = 0; l < 8; l++) sum += part[l];
      dist[m] = sum / (float)n;
    }
  }
  /* k nearest, ties to the lower index; then ascending order. */
  int32_t k = g->k < g->members ? g->k : g->members;
  for (int32_t j = 0; j < k; j++) {
    int32_t best = -1;
    for (int32_t m = 0; m < g->members; m++) {
      int32_t taken = 0;
      for (int32_t t = 0; t < j; t++) taken |= chosen[t] == m;
      if (taken) continue;
      if (best < 0 || dist[m] < dist[best] || (isnan(dist[best]) && !isnan(dist[m]))) best = m;
    }
    chosen[j] = best;
  }
  for (int32_t a = 1; a < k; a++)
    for (int32_t b = a; b > 0 && chosen[b - 1] > chosen[b]; b--) {
      const int32_t t = chosen[b];
      chosen[b] = chosen[b - 1];
      chosen[b - 1] = t;
    }
  return k;
}
