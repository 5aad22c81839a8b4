/* cardc runtime kernels: C99, no dynamic allocation.
 *
 * Activations are f32, channels-first ([C][H][W], the IR's order, so
 * Flatten is free). A matrix layer (conv or linear; linear = 1x1 conv on a
 * 1x1 image) computes per output channel o and output pixel:
 *   y[o] = act(mult[o] * sum_k w[o][k] * x[k] + bias[o])
 * over the input window x (zeros outside the image).
 *
 * Every matrix layer first copies its input into `scratch` in a padded,
 * column-phase-split layout: channel ci, column phase q (= x mod sw), padded
 * row y, column j at
 *   scratch[((ci * sw + q) * hp + y) * wq + j]   (padded column x = j*sw + q)
 * so that for a fixed (ci, ky, kx) the inputs of 8 consecutive output
 * columns are 8 consecutive floats, at any stride. The kernels vectorize
 * over output pixels (8 columns of one row per vector): the sparse and
 * binary kernels need that, because every output channel has its own
 * pattern of kept weights. The dense kernel blocks CARDC_J output channels
 * x CARDC_DENSE_V pixel vectors in registers.
 *
 * Weight formats (emitted by cardc's src/compile/emit_c.rs):
 *  - dense (f32/f16/int8): [ceil(oc/J)][ic*kh*kw][J] in (ci, ky, kx) order,
 *    output channels padded with zeros to a multiple of J; koff[k] is the
 *    scratch offset of patch element k.
 *  - sparse: per output channel nnz[o] values and their scratch offsets.
 *  - sparse8: sparse with int8 values; the weight is value * mult[o].
 *  - binary: per output channel and kernel position, sign and mask words
 *    along input channels (bit set = -1 / kept); poff[p] is the scratch
 *    offset of kernel position p for channel 0, channel ci adds ci*cstride.
 *  - binary lists (binary layers where this is no larger than the words):
 *    per output channel npos[o] offsets under +1 signs, then nneg[o] under
 *    -1 signs; the weight is +-mult[o].
 *  - xnor (binary weights on a Sign output, whose inputs are +-1): per
 *    output channel the whole patch ([kh][kw][ic] bits, bit set = -1) as
 *    xn_chunks blocks of 4 words and, if xn_tail is 1 or 2, the last <= 32
 *    or <= 64 bits as a tail of xn_tail words repeated to fill 4 words;
 *    y = act(mult[o] * (kept[o] - 2 * popcount(mask & (x ^ s)) - corr) +
 *    bias[o]), where corr corrects for zero padding packing as +1 (cardc's
 *    src/compile/xnor.rs).
 */
#ifndef CARDC_KERNELS_H
#define CARDC_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#define CARDC_ACT_NONE 0
#define CARDC_ACT_RELU 1
#define CARDC_ACT_RELU6 2
#define CARDC_ACT_SIGN 3 /* +1 where x >= 0, else -1 */

/* Output channels per dense weight block (cardc's DENSE_J). */
#define CARDC_J 4

/* Weight formats of a matrix layer. */
#define CARDC_F32 0
#define CARDC_F16 1
#define CARDC_I8 2
#define CARDC_SPARSE 3
#define CARDC_BINARY 4
#define CARDC_BINARY_LISTS 5
#define CARDC_BINARY_RICE 6
#define CARDC_SPARSE8 7
#define CARDC_XNOR 8

/* One matrix layer: geometry, padded-input layout, bias and multipliers,
 * and the weights of exactly one format (the others are NULL). */
typedef struct cardc_layer {
  int32_t ih, iw, ic, oh, ow, oc, kh, kw, sh, sw, ph, pw, act, format;
  int32_t hp, wq; /* padded rows; columns per phase */
  int32_t in_padded; /* input already in the padded layout (handed off or
                        a zero-bordered value read in place) */
  /* Otherwise the input channel ci, row y, column x is at
   * ci*in_plane + y*in_row + x + in_base; in_plane = 0: plain [ic][ih][iw]
   * (a zero-bordered value copied into the layer's own layout). */
  int32_t in_plane, in_row, in_base;
  /* Output element (o, oy, ox) at o*out_plane + oy*out_row + ox + out_base;
   * out_wq > 0: the output is the next layer's zero-bordered padded input
   * (out_hp x out_wq per channel, image at row out_ph, column out_pw). */
  int32_t out_plane, out_row, out_base, out_hp, out_wq, out_ph, out_pw;
  const float *bias; /* [oc] */
  const float *mult; /* [oc] or NULL (= 1) */
  const int32_t *koff; /* dense: [ic*kh*kw] */
  const float *w_f32;
  const uint16_t *w_f16;
  const int8_t *w_i8;
  const uint32_t *sp_nnz; /* [oc] */
  const float *sp_val;
  const int8_t *sp_val8; /* sparse8 */
  const uint16_t *off16; /* sparse / binary lists: scratch offsets */
  const uint32_t *off32;
  const uint32_t *bin_sign; /* [oc][kh*kw][words] */
  const uint32_t *bin_mask; /* same shape, or NULL when all kept */
  const int32_t *poff;      /* binary: [kh*kw] */
  const uint32_t *bin_npos; /* binary lists: [oc] */
  const uint32_t *bin_nneg;
  int32_t bin_words;
  /* Binary, Rice-coded (cardc's src/compile/rice.rs): the stream (plus one
   * word of padding), its parameter, and the RAM it is decoded into on each
   * call ([oc] counts; per kept weight its scratch offset, bit 31 = -1). */
  const uint32_t *rice;
  int32_t rice_k;
  uint32_t *rice_counts;
  uint32_t *rice_off;
  /* xnor: signs and masks ([oc][4*chunks + 4*tail] words; mask NULL when all
   * kept); the per-block table xn_kt[row class][column pattern][oc][8]
   * (cardc's xnor::block_table: kept minus the padding correction, or with
   * a Sign activation the count above which the output is -1); with
   * padding, the class of each output row and the column pattern of each
   * block of 8 output columns (NULL without padding: one class, one
   * pattern); and RAM for the packed input signs, the byte rows and eight
   * pixels' patches. */
  const uint32_t *xn_sign;
  const uint32_t *xn_mask;
  int32_t xn_chunks, xn_tail;
  const int16_t *xn_kt;
  const uint8_t *xn_rowc, *xn_blockc;
  int32_t xn_colpatterns;
  /* xnor layer handing its Sign output to an xnor layer: written as that
   * layer's byte rows (the bits of ic/8 bytes per padded position, out_*
   * geometry) instead of floats; and the reader, whose input is those rows */
  int32_t xn_out_bits, xn_in_rows;
  uint32_t *xn_bits;
} cardc_layer;

/* Convolution / linear layer: [ic][ih][iw] -> [oc][oh][ow] (or the output
 * layout above). scratch receives the padded input unless in_padded, when
 * `in` is that padded input. */
void cardc_mat(const cardc_layer *L, const float *in, float *out, float *scratch);
/* The same followed by an element-wise Add with res (laid out like out)
 * before the activation: out = act((W x) * mult + bias + res). Not for
 * xnor layers. */
void cardc_mat_residual(const cardc_layer *L, const float *in, const float *res, float *out,
                        float *scratch);

/* Raw CHW bytes -> CHW floats through lut[c][256]. */
void cardc_normalize(const uint8_t *img, const float *lut, int32_t c, int32_t pixels,
                     float *out);
void cardc_add(const float *a, const float *b, float *out, int32_t n, int32_t act);
void cardc_affine(const float *in, float *out, const float *scale, const float *shift,
                  int32_t pixels, int32_t c, int32_t act);
void cardc_activation(const float *in, float *out, int32_t n, int32_t act);
/* Pooling on [c][ih][iw]; avg counts padded cells (divides by kh*kw). */
void cardc_maxpool(const float *in, float *out, int32_t ih, int32_t iw, int32_t c,
                   int32_t oh, int32_t ow, int32_t kh, int32_t kw, int32_t sh, int32_t sw,
                   int32_t ph, int32_t pw);
void cardc_avgpool(const float *in, float *out, int32_t ih, int32_t iw, int32_t c,
                   int32_t oh, int32_t ow, int32_t kh, int32_t kw, int32_t sh, int32_t sw,
                   int32_t ph, int32_t pw);
/* Channel ch's plane at in + ch*plane (plane >= pixels: a zero-bordered
 * value's borders add nothing); the mean divides by pixels. */
void cardc_global_avgpool(const float *in, float *out, int32_t plane, int32_t pixels,
                          int32_t c);

/* IEEE half bits -> float (exact). */
float cardc_half_to_float(uint16_t h);

#endif
