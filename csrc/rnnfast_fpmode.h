/* rnnfast: flush-to-zero / denormals-are-zero for the duration of a kernel.
 *
 * Denormal operands slow x86 arithmetic by one to two orders of magnitude; a
 * recurrent state decaying towards zero produces them. The kernels set FTZ and DAZ
 * on entry and restore the caller's mode on exit. The mode is per thread, so this
 * is safe with several threads running kernels at once. A no-op off x86.
 */
#ifndef RNNFAST_FPMODE_H
#define RNNFAST_FPMODE_H

#if defined(__SSE2__) || defined(_M_X64) || defined(_M_AMD64)
#include <xmmintrin.h>
#define RNNFAST_FTZ_DAZ_BITS 0x8040u  /* FTZ (bit 15) | DAZ (bit 6) */

static inline unsigned int rnnfast_fpmode_enter(void)
{
    unsigned int saved = _mm_getcsr();
    _mm_setcsr(saved | RNNFAST_FTZ_DAZ_BITS);
    return saved;
}

static inline void rnnfast_fpmode_exit(unsigned int saved)
{
    _mm_setcsr(saved);
}
#else
static inline unsigned int rnnfast_fpmode_enter(void) { return 0; }
static inline void rnnfast_fpmode_exit(unsigned int saved) { (void)saved; }
#endif

#endif /* RNNFAST_FPMODE_H */
