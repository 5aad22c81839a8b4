/* cardc harness for hosted targets (Linux, native or QEMU user mode).
 *
 *   ./model FILE...
 *
 * Each FILE holds one or more raw images (CARDC_INPUT_BYTES each, uint8,
 * CHW, as the dataset stores them; normalization is inside the model).
 * For every image one line of CARDC_CLASSES logits is printed; a last line
 * "# median_ms X" gives the median single-image latency of cardc_infer.
 * A deck (CARDC_DECK_MEMBERS defined) also prints "# picks M..." after each
 * image's line (the members its gate chose) and, at the end, the median
 * latency of its gate alone and of one member card alone (the first
 * chosen), each timed in a separate call.
 * A file whose size is not a positive multiple of the image size is
 * rejected (exit status 2). */
#define _POSIX_C_SOURCE 199309L
#include <stdio.h>
#include <stdint.h>
#include <time.h>

#include "model.h"

#define MAX_TIMED 4096

static uint8_t image[CARDC_INPUT_BYTES];
static float logits[CARDC_CLASSES];
static double times_ms[MAX_TIMED];
#ifdef CARDC_DECK_MEMBERS
static double gate_ms[MAX_TIMED], member_ms[MAX_TIMED];
static float member_logits[CARDC_CLASSES];
#endif

static double now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec * 1e3 + (double)t.tv_nsec / 1e6;
}

static void sort(double *v, size_t n) {
  size_t i, j;
  for (i = 1; i < n; i++) {
    double x = v[i];
    for (j = i; j > 0 && v[j - 1] > x; j--) v[j] = v[j - 1];
    v[j] = x;
  }
}

int main(int argc, char **argv) {
  size_t timed = 0;
  int f;
  if (argc < 2) {
    fprintf(stderr, "usage: %s IMAGES.bin... (%d bytes per image)\n", argv[0], CARDC_INPUT_BYTES);
    return 2;
  }
  for (f = 1; f < argc; f++) {
    FILE *fp = fopen(argv[f], "rb");
    size_t images = 0;
    if (!fp) {
      fprintf(stderr, "%s: cannot open\n", argv[f]);
      return 2;
    }
    for (;;) {
      size_t got = fread(image, 1, sizeof image, fp);
      double t0, t1;
      int k, timed_now = timed < MAX_TIMED;
      if (got == 0) break;
      if (got != sizeof image) {
        fprintf(stderr, "%s: size is not a multiple of %d bytes (one image)\n", argv[f],
                CARDC_INPUT_BYTES);
        fclose(fp);
        return 2;
      }
      t0 = now_ms();
      if (cardc_infer(image, logits) != 0) {
        fprintf(stderr, "%s: inference failed\n", argv[f]);
        fclose(fp);
        return 1;
      }
      t1 = now_ms();
      if (timed_now) times_ms[timed++] = t1 - t0;
      for (k = 0; k < CARDC_CLASSES; k++) printf(k ? " %.9g" : "%.9g", (double)logits[k]);
      printf("\n");
#ifdef CARDC_DECK_MEMBERS
      {
        int32_t chosen[CARDC_DECK_MEMBERS], n, m;
        double t2;
        t0 = now_ms();
        n = cardc_deck_gate(image, chosen);
        t1 = now_ms();
        cardc_deck_member(chosen[0], image, member_logits);
        t2 = now_ms();
        if (timed_now) {
          gate_ms[timed - 1] = t1 - t0;
          member_ms[timed - 1] = t2 - t1;
        }
        printf("# picks");
        for (m = 0; m < n; m++) printf(" %d", (int)chosen[m]);
        printf("\n");
      }
#endif
      images++;
    }
    fclose(fp);
    if (images == 0) {
      fprintf(stderr, "%s: empty (expected images of %d bytes)\n", argv[f], CARDC_INPUT_BYTES);
      return 2;
    }
  }
  sort(times_ms, timed);
  printf("# median_ms %.6f\n", timed ? times_ms[timed / 2] : 0.0);
#ifdef CARDC_DECK_MEMBERS
  sort(gate_ms, timed);
  sort(member_ms, timed);
  printf("# gate_median_ms %.6f\n", timed ? gate_ms[timed / 2] : 0.0);
  printf("# member_median_ms %.6f\n", timed ? member_ms[timed / 2] : 0.0);
#endif
  return 0;
}
