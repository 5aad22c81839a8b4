/* cardc CARD-Deck spectral gate (see cardc_gate.h). */
#include "cardc_gate.h"

#include <math.h>

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

/* d[centered (ky, kx)] = log(|X| / sqrt(h*w) + 1e-3) - reference there. */
static void deviate(const cardc_gate *g, float *d, const float *ref, int32_t ky, int32_t kx,
                    float a, float b, float scale) {
  const int32_t h = g->h, w = g->w;
  const int32_t i = ((ky + h / 2) % h) * w + (kx + w / 2) % w;
  d[i] = logf(sqrtf(a * a + b * b) * scale + 1e-3f) - ref[i];
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
      const int32_t nk = (w - k) % w;
      const float ar = zr[k], ai = zi[k], cr = zr[nk], ci = -zi[nk];
      zr[k] = 0.5f * (ar + cr);
      zi[k] = 0.5f * (ai + ci);
      br[k] = 0.5f * (ai - ci);
      bi[k] = -0.5f * (ar - cr);
    }
  }
  for (int32_t kx = 0; kx <= half; kx++) dft1(re + kx, im + kx, h, w, g->cos_h, g->sin_h, 0, 0);
  for (int32_t ky = 0; ky < h; ky++) {
    for (int32_t kx = 0; kx <= half; kx++) {
      const float a = re[ky * w + kx], b = im[ky * w + kx];
      deviate(g, d, ref, ky, kx, a, b, scale);
      if (kx > 0 && kx < half) deviate(g, d, ref, (h - ky) % h, w - kx, a, b, scale);
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
      double ab = 0.0, aa = 0.0, bb = 0.0;
      for (int32_t i = 0; i < n; i++) {
        ab += (double)dev[i] * s[i];
        aa += (double)dev[i] * dev[i];
        bb += (double)s[i] * s[i];
      }
      dist[m] = (aa == 0.0 || bb == 0.0) ? 1.0f : (float)(1.0 - ab / (sqrt(aa) * sqrt(bb)));
    } else {
      float sum = 0.0f;
      for (int32_t i = 0; i < n; i++) sum += fabsf(dev[i] - s[i]);
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
