/* cardc harness for bare-metal targets (Cortex-M), I/O through Arm
 * semihosting (QEMU: -semihosting-config enable=on,target=native).
 *
 * The semihosting command line is "PROGRAM FILE..." (QEMU builds it from
 * -kernel and -append). Each FILE, opened relative to the debugger's or
 * QEMU's working directory, holds one or more raw images
 * (CARDC_INPUT_BYTES each, uint8, CHW; normalization is inside the model).
 * For every image one line of CARDC_CLASSES logits goes to stdout; a last
 * line "# median_ms X" gives the median latency of cardc_infer over the
 * first MAX_TIMED images, measured with SysTick at CARDC_CPU_HZ (under QEMU
 * that is the emulator's virtual clock, not the device's time). Exit
 * status (SYS_EXIT_EXTENDED): 0, 1 if inference failed, 2 for bad input.
 *
 * No libc I/O: floats are printed by put_float below (9 significant
 * digits, enough to read back the same float). */
#include <stdint.h>

#include "model.h"

#ifndef CARDC_CPU_HZ
#define CARDC_CPU_HZ 25000000u
#endif
#define MAX_TIMED 256
#define CMDLINE_BYTES 512

#define SYS_OPEN 0x01
#define SYS_CLOSE 0x02
#define SYS_WRITE 0x05
#define SYS_READ 0x06
#define SYS_FLEN 0x0C
#define SYS_GET_CMDLINE 0x15
#define SYS_EXIT_EXTENDED 0x20

static uint8_t image[CARDC_INPUT_BYTES];
static float logits[CARDC_CLASSES];
static uint32_t times[MAX_TIMED];
static char line[CARDC_CLASSES * 18 + 64];
static int out_fd = -1, err_fd = -1;

static int32_t semihost(uint32_t op, void *arg) {
  register uint32_t r0 __asm__("r0") = op;
  register void *r1 __asm__("r1") = arg;
  __asm__ volatile("bkpt 0xab" : "+r"(r0) : "r"(r1) : "memory");
  return (int32_t)r0;
}

static uint32_t str_len(const char *s) {
  uint32_t n = 0;
  while (s[n]) n++;
  return n;
}

/* Opens `name` with ISO C fopen mode index `mode` (0 "r", 1 "rb", 4 "w",
 * 8 "a"); ":tt" is the console (stdout for "w", stderr for "a"). */
static int open_file(const char *name, uint32_t mode) {
  uint32_t a[3] = {(uint32_t)(uintptr_t)name, mode, str_len(name)};
  return semihost(SYS_OPEN, a);
}

static void write_fd(int fd, const char *s, uint32_t n) {
  uint32_t a[3] = {(uint32_t)fd, (uint32_t)(uintptr_t)s, n};
  if (fd >= 0) semihost(SYS_WRITE, a);
}

static void say(const char *a, const char *b) {
  write_fd(err_fd, a, str_len(a));
  write_fd(err_fd, b, str_len(b));
  write_fd(err_fd, "\n", 1);
}

static void finish(uint32_t status) {
  uint32_t block[2] = {0x20026u /* ADP_Stopped_ApplicationExit */, status};
  semihost(SYS_EXIT_EXTENDED, block);
  for (;;) {
  }
}

/* ---- SysTick: 24-bit down-counter at the core clock, wraps counted. ---- */
#define SYST_CSR (*(volatile uint32_t *)0xE000E010u)
#define SYST_RVR (*(volatile uint32_t *)0xE000E014u)
#define SYST_CVR (*(volatile uint32_t *)0xE000E018u)
static volatile uint32_t wraps;

void SysTick_Handler(void) { wraps++; }

static uint64_t ticks(void) {
  uint32_t hi, v;
  do {
    hi = wraps;
    v = SYST_CVR;
  } while (hi != wraps);
  return (uint64_t)hi * 0x1000000u + (0xFFFFFFu - v);
}

/* ---- Output ---- */
static char *put_uint(char *p, uint32_t v) {
  char d[10];
  int n = 0;
  do {
    d[n++] = (char)('0' + v % 10);
    v /= 10;
  } while (v);
  while (n) *p++ = d[--n];
  return p;
}

/* `x` as d.dddddddde[-]N: 9 significant digits. The scaling below is in
 * double, whose rounding error is far below a float's half ulp, so the
 * text reads back as exactly `x`. */
static char *put_float(char *p, double x) {
  int e = 0, i;
  uint32_t m;
  char d[9];
  if (x != x) {
    p[0] = 'N', p[1] = 'a', p[2] = 'N';
    return p + 3;
  }
  if (x < 0) {
    *p++ = '-';
    x = -x;
  }
  if (x > 3.5e38) {
    p[0] = 'i', p[1] = 'n', p[2] = 'f';
    return p + 3;
  }
  if (x == 0) {
    *p++ = '0';
    return p;
  }
  while (x >= 1e17) x /= 1e8, e += 8;
  while (x >= 1e9) x /= 10, e++;
  while (x < 1e-7) x *= 1e8, e -= 8;
  while (x < 1e8) x *= 10, e--;
  m = (uint32_t)(x + 0.5);
  if (m >= 1000000000u) m /= 10, e++;
  e += 8;
  for (i = 8; i >= 0; i--) d[i] = (char)('0' + m % 10), m /= 10;
  *p++ = d[0];
  *p++ = '.';
  for (i = 1; i < 9; i++) *p++ = d[i];
  *p++ = 'e';
  if (e < 0) *p++ = '-', e = -e;
  return put_uint(p, (uint32_t)e);
}

static void sort(uint32_t *v, uint32_t n) {
  uint32_t i, j;
  for (i = 1; i < n; i++) {
    uint32_t x = v[i];
    for (j = i; j > 0 && v[j - 1] > x; j--) v[j] = v[j - 1];
    v[j] = x;
  }
}

/* Runs the model on every image of the file `name`; returns an exit
 * status (0 ok). */
static uint32_t run_file(const char *name, uint32_t *timed) {
  int fd = open_file(name, 1);
  int32_t len;
  uint32_t i, n;
  if (fd < 0) {
    say(name, ": cannot open");
    return 2;
  }
  len = semihost(SYS_FLEN, &fd);
  if (len <= 0 || len % CARDC_INPUT_BYTES != 0) {
    say(name, len == 0 ? ": empty (expected images)"
                       : ": size is not a multiple of one image");
    return 2;
  }
  n = (uint32_t)len / CARDC_INPUT_BYTES;
  for (i = 0; i < n; i++) {
    uint32_t a[3] = {(uint32_t)fd, (uint32_t)(uintptr_t)image, CARDC_INPUT_BYTES};
    uint64_t t0, t1;
    char *p = line;
    int k;
    if (semihost(SYS_READ, a) != 0) {
      say(name, ": short read");
      return 2;
    }
    t0 = ticks();
    if (cardc_infer(image, logits) != 0) {
      say(name, ": inference failed");
      return 1;
    }
    t1 = ticks();
    if (*timed < MAX_TIMED) times[(*timed)++] = (uint32_t)(t1 - t0);
    for (k = 0; k < CARDC_CLASSES; k++) {
      if (k) *p++ = ' ';
      p = put_float(p, (double)logits[k]);
    }
    *p++ = '\n';
    write_fd(out_fd, line, (uint32_t)(p - line));
  }
  semihost(SYS_CLOSE, &fd);
  return 0;
}

int main(void) {
  static char cmd[CMDLINE_BYTES];
  uint32_t args[2] = {(uint32_t)(uintptr_t)cmd, CMDLINE_BYTES - 1};
  uint32_t timed = 0, files = 0, status = 0;
  char *p = cmd, *p_end;
  out_fd = open_file(":tt", 4);
  err_fd = open_file(":tt", 8);
  SYST_RVR = 0xFFFFFFu;
  SYST_CVR = 0;
  SYST_CSR = 7; /* enable, interrupt on wrap, core clock */
  if (semihost(SYS_GET_CMDLINE, args) != 0) args[1] = 0;
  cmd[args[1]] = 0;
  /* Skip the program name, then one file per word. */
  while (*p && *p != ' ') p++;
  for (;;) {
    while (*p == ' ') p++;
    if (!*p) break;
    for (p_end = p; *p_end && *p_end != ' '; p_end++) {
    }
    if (*p_end) *p_end++ = 0;
    files++;
    status = run_file(p, &timed);
    if (status) finish(status);
    p = p_end;
  }
  if (!files) {
    say("usage: model IMAGES.bin... (semihosting command line)", "");
    finish(2);
  }
  sort(times, timed);
  p = line;
  p[0] = '#', p[1] = ' ';
  p += 2;
  {
    const char *label = "median_ms ";
    while (*label) *p++ = *label++;
  }
  p = put_float(p, timed ? (double)times[timed / 2] * 1000.0 / (double)CARDC_CPU_HZ : 0.0);
  *p++ = '\n';
  write_fd(out_fd, line, (uint32_t)(p - line));
  return 0;
}
