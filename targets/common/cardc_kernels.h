/* cardc runtime kernels: portable C99, no dynamic allocation.
 *
 * Activations are f32, channels-last ([H][W][C]). A matrix layer (conv or
 * linear) computes per output pixel and output channel o:
 *   y[o] = act(mult[o] * sum_k w[o][k] * patch[k] + bias[o])
 * where patch is the input window in [kh][kw][ic] order (zeros outside the
 * image). The weight formats are documented in cardc's src/compile/pack.rs.
 */
#ifndef CARDC_KERNELS_H
#define CARDC_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#define CARDC_ACT_NONE 0
#define CARDC_ACT_RELU 1
#define CARDC_ACT_RELU6 2

/* One matrix layer: geometry, bias and multipliers, and the weights of
 * exactly one format (the others are NULL). */
typedef struct cardc_layer {
  int32_t ih, iw, ic, oh, ow, oc, kh, kw, sh, sw, ph, pw, act;
  const float *bias; /* [oc] */
  const float *mult; /* [oc] or NULL (= 1) */
  const float *w_f32;
  const uint16_t *w_f16;
  const int8_t *w_i8;
  const uint32_t *sp_nnz; /* [oc] */
  const float *sp_val;
  const uint16_t *sp_inc16;
  const uint32_t *sp_inc32;
  const uint32_t *bin_sign; /* [oc][kh*kw][words] */
  const uint32_t *bin_mask; /* same shape, or NULL when all kept */
  int32_t bin_words;
} cardc_layer;

/* Computes all oc outputs of one pixel from its patch (no bias, no act). */
typedef void (*cardc_rows_fn)(const cardc_layer *L, const float *patch, float *out);

void cardc_rows_f32(const cardc_layer *L, const float *patch, float *out);
void cardc_rows_f16(const cardc_layer *L, const float *patch, float *out);
void cardc_rows_i8(const cardc_layer *L, const float *patch, float *out);
void cardc_rows_sparse(const cardc_layer *L, const float *patch, float *out);
void cardc_rows_binary(const cardc_layer *L, const float *patch, float *out);

/* Convolution / linear layer. scratch holds kh*kw*ic floats. */
void cardc_mat(const cardc_layer *L, cardc_rows_fn rows, const float *in, float *out,
               float *scratch);

/* Raw CHW bytes -> channels-last floats through lut[c][256]. */
void cardc_normalize(const uint8_t *img, const float *lut, int32_t c, int32_t pixels,
                     float *out);
void cardc_add(const float *a, const float *b, float *out, int32_t n, int32_t act);
void cardc_affine(const float *in, float *out, const float *scale, const float *shift,
                  int32_t pixels, int32_t c, int32_t act);
void cardc_activation(const float *in, float *out, int32_t n, int32_t act);
/* Pooling on [ih][iw][c]; avg counts padded cells (divides by kh*kw). */
void cardc_maxpool(const float *in, float *out, int32_t ih, int32_t iw, int32_t c,
                   int32_t oh, int32_t ow, int32_t kh, int32_t kw, int32_t sh, int32_t sw,
                   int32_t ph, int32_t pw);
void cardc_avgpool(const float *in, float *out, int32_t ih, int32_t iw, int32_t c,
                   int32_t oh, int32_t ow, int32_t kh, int32_t kw, int32_t sh, int32_t sw,
                   int32_t ph, int32_t pw);
void cardc_global_avgpool(const float *in, float *out, int32_t pixels, int32_t c);
/* [pixels][c] -> [c][pixels] */
void cardc_to_channels_first(const float *in, float *out, int32_t pixels, int32_t c);

/* IEEE half bits -> float (exact). */
float cardc_half_to_float(uint16_t h);

#endif
