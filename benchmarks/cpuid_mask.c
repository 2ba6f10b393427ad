/* Make this process see an AVX2-only x86 CPU: AVX-512, VNNI and AMX taken out of what the CPUID
 * instruction reports, so ONNX Runtime, numpy and PyTorch pick the kernels they would pick on such
 * a CPU, and those kernels run natively at full speed (unlike under an emulator).
 *
 * How: Linux's CPUID faulting (arch_prctl ARCH_SET_CPUID, on CPUs whose /proc/cpuinfo says
 * cpuid_fault) turns every CPUID instruction of this thread, and of the threads and forks it
 * starts, into a SIGSEGV. The handler runs the real instruction with faulting off for a moment,
 * clears the feature bits below and steps over the instruction. Loaded with LD_PRELOAD; the
 * constructor runs before main, so libraries that read CPUID once at load see the masked answer.
 * glibc's own string functions read CPUID earlier still (GLIBC_TUNABLES covers them; see
 * benchmarks/avx2_only.py, which compiles and loads this file). */
#define _GNU_SOURCE
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

#define ARCH_SET_CPUID 0x1012
#define BIT(n) (1u << (n))

/* CPUID leaf 7, subleaf 0 */
static const uint32_t L7_EBX = BIT(16) | BIT(17) | BIT(21) | BIT(26) | BIT(27) | BIT(28) | BIT(30) |
                               BIT(31); /* AVX512 F DQ IFMA PF ER CD BW VL */
static const uint32_t L7_ECX = BIT(1) | BIT(6) | BIT(11) | BIT(12) | BIT(14); /* VBMI VBMI2 VNNI BITALG VPOPCNTDQ */
static const uint32_t L7_EDX = BIT(2) | BIT(3) | BIT(8) | BIT(22) | BIT(23) | BIT(24) |
                               BIT(25); /* 4VNNIW 4FMAPS VP2INTERSECT AMX-BF16 AVX512-FP16 AMX-TILE AMX-INT8 */
/* CPUID leaf 7, subleaf 1 */
static const uint32_t L71_EAX = BIT(4) | BIT(5) | BIT(21) | BIT(23); /* AVX-VNNI AVX512-BF16 AMX-FP16 AVX-IFMA */
static const uint32_t L71_EDX = BIT(4) | BIT(5) | BIT(10) | BIT(14); /* AVX-VNNI-INT8 AVX-NE-CONVERT AVX-VNNI-INT16 AMX-COMPLEX */

static int cpuid_faulting(int on) { return (int)syscall(SYS_arch_prctl, ARCH_SET_CPUID, on ? 0 : 1); }

static void on_sigsegv(int sig, siginfo_t *info, void *context) {
    ucontext_t *uc = context;
    greg_t *reg = uc->uc_mcontext.gregs;
    const uint8_t *ip = (const uint8_t *)reg[REG_RIP];
    /* A CPUID fault is sent by the kernel itself; anything else is a real crash: let it happen. */
    if (info->si_code != SI_KERNEL || ip[0] != 0x0f || ip[1] != 0xa2) {
        signal(sig, SIG_DFL);
        return;
    }
    uint32_t leaf = (uint32_t)reg[REG_RAX], sub = (uint32_t)reg[REG_RCX], a, b, c, d;
    cpuid_faulting(0);
    __asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(leaf), "c"(sub));
    cpuid_faulting(1);
    if (leaf == 7 && sub == 0) {
        b &= ~L7_EBX;
        c &= ~L7_ECX;
        d &= ~L7_EDX;
    } else if (leaf == 7 && sub == 1) {
        a &= ~L71_EAX;
        d &= ~L71_EDX;
    }
    reg[REG_RAX] = a;
    reg[REG_RBX] = b;
    reg[REG_RCX] = c;
    reg[REG_RDX] = d;
    reg[REG_RIP] += 2;
}

__attribute__((constructor)) static void mask_cpuid(void) {
    struct sigaction action = {0};
    action.sa_sigaction = on_sigsegv;
    action.sa_flags = SA_SIGINFO;
    sigemptyset(&action.sa_mask);
    if (sigaction(SIGSEGV, &action, NULL) != 0 || cpuid_faulting(1) != 0) {
        fputs("cpuid_mask: this CPU or kernel has no CPUID faulting; refusing to run unmasked\n", stderr);
        _exit(3);
    }
}
