/* cardc CARD-Deck spectral gate: portable C99, no dynamic allocation.
 *
 * The same gate as cardc's src/deck (see its module doc): the input's
 * per-channel centered log-amplitude spectrum ln(|DFT|/sqrt(H*W) + 1e-3)
 * minus the deck's clean reference, zero-frequency bins zeroed, compared
 * with each member's signature by mean L1 or cosine distance; the k nearest
 * members (ties to the lower index) are chosen. The 2-D DFT runs row by
 * row, then column by column, with precomputed twiddle factors. For
 * power-of-two sides it is a radix-2 FFT that uses the input being real:
 * rows are transformed two at a time and only half the columns are needed
 * (32x32x3: 3 * 33 FFTs of 80 butterflies, 3 * 544 logarithms). Other
 * sizes take the direct sum.
 */
#ifndef CARDC_GATE_H
#define CARDC_GATE_H

#include <stdint.h>

#define CARDC_GATE_L1 0
#define CARDC_GATE_COSINE 1

typedef struct cardc_gate {
  int32_t c, h, w, members, k, metric;
  const float *reference;  /* [c][h][w], centered */
  const float *signatures; /* [members][c][h][w], centered */
  const float *cos_h, *sin_h; /* [h*h]: cos/sin(2*pi*a*b/h) */
  const float *cos_w, *sin_w; /* [w*w] */
} cardc_gate;

/* Chooses members for one 8-bit [c][h][w] image. `work` holds at least
 * 3*c*h*w + 2*max(h, w) + members floats; `chosen` receives k member indices in
 * ascending order. Returns k. */
int32_t cardc_gate_select(const cardc_gate *g, const uint8_t *image, float *work,
                          int32_t *chosen);

#endif
