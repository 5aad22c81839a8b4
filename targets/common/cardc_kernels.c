/* cardc runtime kernels (see cardc_kernels.h). Portable C99; an aarch64
 * build uses NEON for the f32 dot products. */
#include "cardc_kernels.h"

#include <math.h>
#include <string.h>

#if defined(__aarch64__) && defined(__ARM_NEON)
#include <arm_neon.h>
#define CARDC_NEON 1
#endif

static float act_apply(float v, int32_t act) {
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

/* Dot product of n floats with independent partial sums. */
static float dot_f32(const float *w, const float *x, int32_t n) {
  int32_t k = 0;
  float s;
#ifdef CARDC_NEON
  float32x4_t a0 = vdupq_n_f32(0.0f), a1 = vdupq_n_f32(0.0f);
  for (; k + 8 <= n; k += 8) {
    a0 = vfmaq_f32(a0, vld1q_f32(w + k), vld1q_f32(x + k));
    a1 = vfmaq_f32(a1, vld1q_f32(w + k + 4), vld1q_f32(x + k + 4));
  }
  s = vaddvq_f32(vaddq_f32(a0, a1));
#else
  float a[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int32_t j;
  for (; k + 8 <= n; k += 8)
    for (j = 0; j < 8; j++) a[j] += w[k + j] * x[k + j];
  s = ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));
#endif
  for (; k < n; k++) s += w[k] * x[k];
  return s;
}

static int32_t patch_len(const cardc_layer *L) { return L->kh * L->kw * L->ic; }

void cardc_rows_f32(const cardc_layer *L, const float *patch, float *out) {
  int32_t n = patch_len(L), o;
  for (o = 0; o < L->oc; o++) out[o] = dot_f32(L->w_f32 + (size_t)o * (size_t)n, patch, n);
}

void cardc_rows_f16(const cardc_layer *L, const float *patch, float *out) {
  int32_t n = patch_len(L), o, k;
  for (o = 0; o < L->oc; o++) {
    const uint16_t *w = L->w_f16 + (size_t)o * (size_t)n;
    float s = 0.0f;
    for (k = 0; k < n; k++) s += cardc_half_to_float(w[k]) * patch[k];
    out[o] = s;
  }
}

void cardc_rows_i8(const cardc_layer *L, const float *patch, float *out) {
  int32_t n = patch_len(L), o, k;
  for (o = 0; o < L->oc; o++) {
    const int8_t *w = L->w_i8 + (size_t)o * (size_t)n;
    float a0 = 0.0f, a1 = 0.0f, a2 = 0.0f, a3 = 0.0f;
    for (k = 0; k + 4 <= n; k += 4) {
      a0 += (float)w[k] * patch[k];
      a1 += (float)w[k + 1] * patch[k + 1];
      a2 += (float)w[k + 2] * patch[k + 2];
      a3 += (float)w[k + 3] * patch[k + 3];
    }
    for (; k < n; k++) a0 += (float)w[k] * patch[k];
    out[o] = (a0 + a1) + (a2 + a3);
  }
}

void cardc_rows_sparse(const cardc_layer *L, const float *patch, float *out) {
  const float *v = L->sp_val;
  size_t j = 0;
  int32_t o;
  for (o = 0; o < L->oc; o++) {
    uint32_t c, cnt = L->sp_nnz[o];
    const float *x = patch;
    float s = 0.0f;
    if (L->sp_inc16) {
      const uint16_t *inc = L->sp_inc16;
      for (c = 0; c < cnt; c++, j++) {
        x += inc[j];
        s += v[j] * *x;
      }
    } else {
      const uint32_t *inc = L->sp_inc32;
      for (c = 0; c < cnt; c++, j++) {
        x += inc[j];
        s += v[j] * *x;
      }
    }
    out[o] = s;
  }
}

void cardc_rows_binary(const cardc_layer *L, const float *patch, float *out) {
  int32_t positions = L->kh * L->kw, words = L->bin_words, o, p, w, b;
  for (o = 0; o < L->oc; o++) {
    float s = 0.0f;
    for (p = 0; p < positions; p++) {
      size_t at = ((size_t)o * (size_t)positions + (size_t)p) * (size_t)words;
      const float *x = patch + (size_t)p * (size_t)L->ic;
      for (w = 0; w < words; w++) {
        uint32_t sg = L->bin_sign[at + (size_t)w];
        uint32_t m = L->bin_mask ? L->bin_mask[at + (size_t)w] : 0xffffffffu;
        int32_t nb = L->ic - 32 * w;
        const float *xw = x + 32 * w;
        if (nb > 32) nb = 32;
        /* kept sum minus twice the kept negative-sign sum; multiplies by
           0/1 instead of branching (random signs defeat branch prediction) */
        {
          float all = 0.0f, neg = 0.0f;
          for (b = 0; b < nb; b++) {
            float v = xw[b] * (float)((m >> b) & 1u);
            all += v;
            neg += v * (float)((sg >> b) & 1u);
          }
          s += all - 2.0f * neg;
        }
      }
    }
    out[o] = s;
  }
}

void cardc_mat(const cardc_layer *L, cardc_rows_fn rows, const float *in, float *out,
               float *scratch) {
  int32_t oy, ox, ky, kx, o;
  int32_t direct = L->kh == 1 && L->kw == 1 && L->ph == 0 && L->pw == 0;
  for (oy = 0; oy < L->oh; oy++) {
    for (ox = 0; ox < L->ow; ox++) {
      const float *patch;
      float *y = out + ((size_t)oy * (size_t)L->ow + (size_t)ox) * (size_t)L->oc;
      if (direct) {
        patch = in + ((size_t)(oy * L->sh) * (size_t)L->iw + (size_t)(ox * L->sw)) * (size_t)L->ic;
      } else {
        float *d = scratch;
        for (ky = 0; ky < L->kh; ky++) {
          int32_t iy = oy * L->sh + ky - L->ph;
          for (kx = 0; kx < L->kw; kx++, d += L->ic) {
            int32_t ix = ox * L->sw + kx - L->pw;
            if (iy < 0 || iy >= L->ih || ix < 0 || ix >= L->iw)
              memset(d, 0, sizeof(float) * (size_t)L->ic);
            else
              memcpy(d, in + ((size_t)iy * (size_t)L->iw + (size_t)ix) * (size_t)L->ic,
                     sizeof(float) * (size_t)L->ic);
          }
        }
        patch = scratch;
      }
      rows(L, patch, y);
      for (o = 0; o < L->oc; o++) {
        float v = L->mult ? y[o] * L->mult[o] : y[o];
        y[o] = act_apply(v + L->bias[o], L->act);
      }
    }
  }
}

void cardc_normalize(const uint8_t *img, const float *lut, int32_t c, int32_t pixels,
                     float *out) {
  int32_t ch, p;
  for (ch = 0; ch < c; ch++)
    for (p = 0; p < pixels; p++)
      out[(size_t)p * (size_t)c + (size_t)ch] =
          lut[(size_t)ch * 256u + img[(size_t)ch * (size_t)pixels + (size_t)p]];
}

void cardc_add(const float *a, const float *b, float *out, int32_t n, int32_t act) {
  int32_t i;
  for (i = 0; i < n; i++) out[i] = act_apply(a[i] + b[i], act);
}

void cardc_affine(const float *in, float *out, const float *scale, const float *shift,
                  int32_t pixels, int32_t c, int32_t act) {
  int32_t p, ch;
  for (p = 0; p < pixels; p++)
    for (ch = 0; ch < c; ch++) {
      size_t i = (size_t)p * (size_t)c + (size_t)ch;
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
  for (oy = 0; oy < oh; oy++) {
    int32_t y0 = oy * sh - ph, y1 = oy * sh + kh - ph;
    if (y0 < 0) y0 = 0;
    if (y1 > ih) y1 = ih;
    for (ox = 0; ox < ow; ox++) {
      int32_t x0 = ox * sw - pw, x1 = ox * sw + kw - pw;
      float *y = out + ((size_t)oy * (size_t)ow + (size_t)ox) * (size_t)c;
      if (x0 < 0) x0 = 0;
      if (x1 > iw) x1 = iw;
      for (ch = 0; ch < c; ch++) y[ch] = is_max ? -INFINITY : 0.0f;
      for (iy = y0; iy < y1; iy++)
        for (ix = x0; ix < x1; ix++) {
          const float *x = in + ((size_t)iy * (size_t)iw + (size_t)ix) * (size_t)c;
          for (ch = 0; ch < c; ch++) {
            if (is_max) {
              if (x[ch] > y[ch]) y[ch] = x[ch];
            } else {
              y[ch] += x[ch];
            }
          }
        }
      if (!is_max)
        for (ch = 0; ch < c; ch++) y[ch] *= inv;
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

void cardc_global_avgpool(const float *in, float *out, int32_t pixels, int32_t c) {
  int32_t p, ch;
  float inv = 1.0f / (float)(pixels > 0 ? pixels : 1);
  for (ch = 0; ch < c; ch++) out[ch] = 0.0f;
  for (p = 0; p < pixels; p++)
    for (ch = 0; ch < c; ch++) out[ch] += in[(size_t)p * (size_t)c + (size_t)ch];
  for (ch = 0; ch < c; ch++) out[ch] *= inv;
}

void cardc_to_channels_first(const float *in, float *out, int32_t pixels, int32_t c) {
  int32_t p, ch;
  for (p = 0; p < pixels; p++)
    for (ch = 0; ch < c; ch++)
      out[(size_t)ch * (size_t)pixels + (size_t)p] = in[(size_t)p * (size_t)c + (size_t)ch];
}
