/* cardc start-up for Cortex-M (ARMv7E-M and ARMv8-M Mainline) without an
 * OS: the vector table, a reset handler that enables the FPU, copies .data
 * from flash, zeroes .bss and calls main, and fault handlers that end the
 * run through semihosting (so QEMU exits with a status instead of hanging).
 * Symbols come from the target's linker script (cortex-m*.ld). */
#include <stdint.h>

extern uint32_t __data_load[], __data_start[], __data_end[];
extern uint32_t __bss_start[], __bss_end[], __stack_top[];

int main(void);
void Reset_Handler(void);
void cardc_fault_handler(void);
/* The harness may define SysTick_Handler (its cycle counter). */
void SysTick_Handler(void) __attribute__((weak, alias("cardc_ignore_handler")));

void cardc_ignore_handler(void) {}

/* SYS_EXIT_EXTENDED with ADP_Stopped_ApplicationExit: QEMU exits with
 * `status`. */
static void semihost_exit(uint32_t status) {
  uint32_t block[2] = {0x20026u, status};
  register uint32_t r0 __asm__("r0") = 0x20u;
  register uint32_t *r1 __asm__("r1") = block;
  __asm__ volatile("bkpt 0xab" : "+r"(r0) : "r"(r1) : "memory");
  for (;;) {
  }
}

/* Any fault (bad access, stack overflow into unmapped memory, undefined
 * instruction): exit status 70. */
void cardc_fault_handler(void) { semihost_exit(70); }

/* Exceptions 1..15. Slot 7 is SecureFault on ARMv8-M, reserved on v7-M. */
__attribute__((section(".vectors"), used)) static void (*const vectors[16])(void) = {
    (void (*)(void))__stack_top, /* initial SP */
    Reset_Handler,
    cardc_fault_handler, /* NMI */
    cardc_fault_handler, /* HardFault */
    cardc_fault_handler, /* MemManage */
    cardc_fault_handler, /* BusFault */
    cardc_fault_handler, /* UsageFault */
    cardc_fault_handler, /* SecureFault (v8-M) */
    0,
    0,
    0,
    cardc_ignore_handler, /* SVCall */
    cardc_ignore_handler, /* DebugMonitor */
    0,
    cardc_ignore_handler, /* PendSV */
    SysTick_Handler,
};

void Reset_Handler(void) {
  /* Full access to CP10/CP11 (the FPU) before any floating-point code:
   * the model and kernels are built with -mfloat-abi=hard. */
  volatile uint32_t *cpacr = (volatile uint32_t *)0xE000ED88u;
  uint32_t *src = __data_load, *dst = __data_start;
  *cpacr |= 0xFu << 20;
  __asm__ volatile("dsb\n\tisb" ::: "memory");
  while (dst < __data_end) *dst++ = *src++;
  for (dst = __bss_start; dst < __bss_end;) *dst++ = 0;
  semihost_exit((uint32_t)main());
}
