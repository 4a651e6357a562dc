/*
 * A tiny JIT over Sieve's generated verifier (issue 12, deliverable 5): Native Client's dynamic code on x86-64
 * Linux, end to end. Built by JITDemoTests with the verifier `sieve generate` writes for policies/nacl-2015.yaml:
 *
 *     cc -std=c99 -O2 -Wall -Wextra -Werror -pthread jit_demo.c sieve_verifier.c
 *
 * What it does, one report line per step (exit 0 only if every step held):
 *   1. lays out a %r15-based sandbox (4 GiB, 40 GiB guards either side, as NaCl): a trusted trampoline page, the
 *      code region (a memfd mapped twice: PROT_NONE, later PROT_READ|PROT_EXEC page by page, inside the sandbox;
 *      PROT_READ|PROT_WRITE for the JIT writer, outside it; no page is ever writable and executable), then data;
 *   2. emits hand-written NaCl code page by page into the writable view, verifies each page with
 *      sieve_verify_region and only then makes it executable;
 *   3. shows a page with a sandbox escape refused (it stays unmapped) and a second verification of a verified page
 *      refused (a layout finding);
 *   4. runs the code on its own thread under a fault handler that ends the process when code runs from a page that
 *      is not verified code (and retries a thread that meets the HLT of an instruction being copied);
 *   5. while that thread runs, replaces the immediate of its `mov $imm32,%eax` (sieve_validate_replacement, then
 *      sieve_copy_code with a membarrier serializer), waits until the thread stores the new value, does the same a
 *      thousand times more checking that no torn instruction ever ran, and shows invalid replacements refused;
 *   6. stops the thread, which leaves the sandbox through a masked indirect jump to the trampoline, and checks from
 *      /proc/self/maps that the executable pages of the code region are exactly the verified ones.
 *
 * With the argument --run-refused it instead emits the escape into the page the loop jumps to when told to stop,
 * sees it refused, and runs the thread anyway: the fault handler must catch the jump into the unverified page and
 * end the process with status 3 (the test holds it to that, so the handler is not a guard that never fires).
 *
 * Trusted code that is not verified, as in NaCl: the entry and exit stubs below (the program's own text, outside
 * the sandbox) and the trampoline page inside the sandbox at r15 + 0x10000 (written by this runtime, never by the
 * JIT'd code, and reached from sandboxed code only through the masked indirect jump).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/membarrier.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <ucontext.h>
#include <unistd.h>

#include "sieve_verifier.h"

/* ---- the sandbox's layout (offsets from %r15) --------------------------------------------------- */

#define GIB (1ull << 30)
#define GUARD (40 * GIB)          /* NaCl x86-64: 40 GiB of PROT_NONE below and above the 4 GiB sandbox */
#define SANDBOX (4 * GIB)
#define PAGE 4096u
#define TRAMPOLINE 0x10000u       /* trusted, not verified: NaCl's trampolines; the first 64 KiB stay PROT_NONE */
#define CODE 0x20000u             /* the code region, the sieve_module: 16 pages of the memfd */
#define CODE_SIZE 0x10000u
#define CODE_PAGES (CODE_SIZE / PAGE)
#define DATA 0x40000u             /* data: the loop's stores, its counter, the stop flag; the stack at its top */
#define DATA_SIZE 0x10000u
#define VALUE (DATA + 0)          /* u32: the last immediate stored by the loop */
#define COUNTER (DATA + 8)        /* u64: loop iterations */
#define STOP (DATA + 0x10)        /* u32: non-zero makes the loop leave the sandbox */

#define HLT 0xF4
#define FIRST 0x11111111u
#define SECOND 0x22222222u
#define STRESS 1000

/* The trusted stubs (not verified: trusted runtime code outside the sandbox). jit_enter(r15, rsp, pc) saves the
   callee-saved registers and the trusted stack pointer, sets %r15 to the sandbox base and %rsp into the sandbox,
   and jumps to pc. jit_exit, reached from the trampoline, restores them and returns from jit_enter. One sandbox
   thread at a time (jit_trusted_rsp is a single slot). */
__attribute__((visibility("hidden"))) uint64_t jit_trusted_rsp;
void jit_enter(uint64_t r15, uint64_t rsp, uint64_t pc) __attribute__((visibility("hidden")));
void jit_exit(void) __attribute__((visibility("hidden")));
__asm__(".text\n"
        ".p2align 5\n"
        ".globl jit_enter\n"
        ".type jit_enter, @function\n"
        "jit_enter:\n"
        "    push %rbx\n    push %rbp\n    push %r12\n    push %r13\n    push %r14\n    push %r15\n"
        "    mov %rsp, jit_trusted_rsp(%rip)\n"
        "    mov %rdi, %r15\n"
        "    mov %rsi, %rsp\n"
        "    jmp *%rdx\n"
        ".size jit_enter, .-jit_enter\n"
        ".p2align 5\n"
        ".globl jit_exit\n"
        ".type jit_exit, @function\n"
        "jit_exit:\n"
        "    mov jit_trusted_rsp(%rip), %rsp\n"
        "    pop %r15\n    pop %r14\n    pop %r13\n    pop %r12\n    pop %rbp\n    pop %rbx\n"
        "    ret\n"
        ".size jit_exit, .-jit_exit\n");

/* ---- state shared with the fault handler -------------------------------------------------------- */

static uint8_t *r15;              /* the sandbox base */
static uint8_t *code_rx;          /* r15 + CODE: the executable view */
static uint8_t *code_rw;          /* the writable view of the same memfd pages, outside the sandbox */
static sieve_module module;
static uint8_t loaded[CODE_SIZE / SIEVE_BUNDLE_SIZE / 8];
static uintptr_t patch_lo, patch_hi;   /* the instruction sieve_copy_code rewrites (set before the first copy) */
static int copying;                    /* 1 while sieve_copy_code runs */
static unsigned long retries;          /* HLT traps retried */
static int thread_left;                /* 1 once the sandbox thread is back from jit_enter */

static void say(const char *s) { ssize_t r = write(1, s, strlen(s)); (void)r; }
static void say_hex(uint64_t v) {
    char b[19]; int k;
    b[0] = '0'; b[1] = 'x';
    for (k = 0; k < 16; k++) b[2 + k] = "0123456789abcdef"[(v >> (60 - 4 * k)) & 15];
    b[18] = 0;
    say(b);
}

/* Whether page k of the code region is verified code: every bundle of it loaded in the module. */
static int page_verified(size_t k) {
    size_t b;
    for (b = k * (PAGE / SIEVE_BUNDLE_SIZE); b < (k + 1) * (PAGE / SIEVE_BUNDLE_SIZE); b++)
        if (!((__atomic_load_n(&loaded[b >> 3], __ATOMIC_ACQUIRE) >> (b & 7)) & 1)) return 0;
    return 1;
}

/* SIGSEGV, SIGBUS, SIGILL. Code that runs from a page of the code region that is not verified code ends the
   process (status 3): a fetch from such a page faults, since only verified pages are ever made executable.
   HLT in user mode raises SIGSEGV (a general-protection fault: si_code SI_KERNEL, RIP at the HLT): sieve_copy_code
   writes HLT over the first byte of an instruction while it rewrites the rest, so a thread that meets that HLT at
   the start of the instruction being copied, while the copy runs (or after it, when the byte is no longer HLT),
   yields and returns: the instruction runs again, old or new, never a mix. That is how a runtime uses
   sieve_copy_code. Any other fault is fatal (status 4). */
static void on_fault(int sig, siginfo_t *info, void *context) {
    ucontext_t *uc = (ucontext_t *)context;
    uintptr_t rip = (uintptr_t)uc->uc_mcontext.gregs[REG_RIP], code = (uintptr_t)code_rx;
    if (rip >= code && rip < code + CODE_SIZE) {
        size_t page = (rip - code) / PAGE;
        if (!page_verified(page)) {
            say("FATAL: code ran from page "); say_hex(page); say(" of the code region (rip r15+");
            say_hex(rip - (uintptr_t)r15); say("), which is not verified code\n");
            _exit(3);
        }
        if (sig == SIGSEGV && info->si_code == SI_KERNEL && rip >= __atomic_load_n(&patch_lo, __ATOMIC_ACQUIRE) &&
            rip < __atomic_load_n(&patch_hi, __ATOMIC_ACQUIRE) &&
            (__atomic_load_n(&copying, __ATOMIC_ACQUIRE) || *(volatile uint8_t *)rip != HLT)) {
            __atomic_add_fetch(&retries, 1, __ATOMIC_RELAXED);
            sched_yield();
            return;
        }
    }
    say("FATAL: signal "); say_hex((uint64_t)sig); say(" at rip "); say_hex(rip); say(", address ");
    say_hex((uint64_t)(uintptr_t)info->si_addr); say("\n");
    _exit(4);
}

/* ---- small helpers --------------------------------------------------------------------------------- */

static int failures;
static void fail(const char *what) { printf("FAIL: %s\n", what); failures++; }
static void die(const char *what) { printf("FAIL: %s: %s\n", what, strerror(errno)); exit(1); }

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}
static void pause_briefly(void) { struct timespec t = {0, 100000}; nanosleep(&t, NULL); }

static uint32_t load32(uint32_t offset) { return __atomic_load_n((uint32_t *)(r15 + offset), __ATOMIC_RELAXED); }
static uint64_t load64(uint32_t offset) { return __atomic_load_n((uint64_t *)(r15 + offset), __ATOMIC_RELAXED); }
static void put32(uint8_t *p, uint32_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); p[2] = (uint8_t)(v >> 16); p[3] = (uint8_t)(v >> 24); }

static const char *plural(size_t n) { return n == 1 ? "finding" : "findings"; }

/* Findings, counted and named (in order, without repeats) for the report. */
typedef struct { size_t count; char kinds[256]; } findings_t;
static void collect(const sieve_finding *f, void *ctx) {
    findings_t *s = (findings_t *)ctx;
    const char *name = sieve_kind_name(f->kind);
    if (f->warning) return;
    s->count++;
    if (!strstr(s->kinds, name) && strlen(s->kinds) + strlen(name) + 3 < sizeof s->kinds) {
        if (s->kinds[0]) strcat(s->kinds, ", ");
        strcat(s->kinds, name);
    }
}

/* ---- the JIT'd code ------------------------------------------------------------------------------ */

/* Page 0. Bundle 0, the loop: store the immediate, count, leave when told to, else again.
     00  b8 imm32                    mov $imm32, %eax              (modifiable: the replacement changes imm32)
     05  41 89 87 00 00 04 00        mov %eax, 0x40000(%r15)
     0c  49 83 87 08 00 04 00 01     addq $1, 0x40008(%r15)
     14  41 83 bf 10 00 04 00 00     cmpl $0, 0x40010(%r15)
     1c  75 02                       jne 0x20
     1e  eb e0                       jmp 0x00
   Bundle 1: jmp to page 1 (a direct jump out of the region: to a bundle start of the module). HLT after. */
static void emit_page0(uint8_t *p, uint32_t imm) {
    static const uint8_t loop[32] = {
        0xB8, 0, 0, 0, 0,
        0x41, 0x89, 0x87, 0x00, 0x00, 0x04, 0x00,
        0x49, 0x83, 0x87, 0x08, 0x00, 0x04, 0x00, 0x01,
        0x41, 0x83, 0xBF, 0x10, 0x00, 0x04, 0x00, 0x00,
        0x75, 0x02,
        0xEB, 0xE0};
    memset(p, HLT, PAGE);
    memcpy(p, loop, sizeof loop);
    put32(p + 1, imm);
    p[32] = 0xE9;
    put32(p + 33, PAGE - 37);
}

/* Page 1, the way out: a masked indirect jump (NaCl's only indirect jump) to the trampoline.
     00  b8 00 00 01 00    mov $0x10000, %eax
     05  83 e0 e0          and $-32, %eax
     08  4c 01 f8          add %r15, %rax
     0b  ff e0             jmp *%rax */
static void emit_page1(uint8_t *p) {
    static const uint8_t out[] = {0xB8, 0x00, 0x00, 0x01, 0x00, 0x83, 0xE0, 0xE0, 0x4C, 0x01, 0xF8, 0xFF, 0xE0};
    memset(p, HLT, PAGE);
    memcpy(p, out, sizeof out);
}

/* A page with two sandbox escapes: a store through an unsandboxed register and a write to the sandbox base.
     00  48 89 03          mov %rax, (%rbx)
     03  4d 31 ff          xor %r15, %r15 */
static void emit_bad(uint8_t *p) {
    static const uint8_t bad[] = {0x48, 0x89, 0x03, 0x4D, 0x31, 0xFF};
    memset(p, HLT, PAGE);
    memcpy(p, bad, sizeof bad);
}

/* Verifies page k as it sits in the writable view and, only when the verifier accepts it, makes the executable view
   of it PROT_READ|PROT_EXEC. Returns the number of findings. */
static size_t load_page(size_t k, findings_t *f) {
    size_t n;
    memset(f, 0, sizeof *f);
    n = sieve_verify_region(&module, code_rw + k * PAGE, PAGE, (uint64_t)(uintptr_t)(code_rx + k * PAGE), collect, f);
    if (n == 0 && mprotect(code_rx + k * PAGE, PAGE, PROT_READ | PROT_EXEC) != 0) die("mprotect code page");
    return n;
}

/* ---- the serializer for sieve_copy_code ----------------------------------------------------------- */

static void sync_cores(void *ctx) {
    (void)ctx;
    if (syscall(SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED_SYNC_CORE, 0, 0) != 0) {
        say("FATAL: membarrier failed after registration\n");
        _exit(5);
    }
}

/* Replaces the immediate of the loop's `mov $imm32,%eax` by `imm` while the loop runs: the old bundle as it is, the
   new one, sieve_validate_replacement over the module, then sieve_copy_code through the writable view. Returns the
   number of instructions changed, or -1 with the findings in f. */
static long replace_immediate(uint32_t imm, void (*serialize)(void *), findings_t *f) {
    uint8_t old_code[SIEVE_BUNDLE_SIZE], new_code[SIEVE_BUNDLE_SIZE];
    long changed;
    memset(f, 0, sizeof *f);
    memcpy(old_code, code_rw, sizeof old_code);
    memcpy(new_code, old_code, sizeof new_code);
    put32(new_code + 1, imm);
    if (sieve_validate_replacement(&module, old_code, new_code, sizeof new_code, (uint64_t)(uintptr_t)code_rx, collect, f))
        return -1;
    __atomic_store_n(&copying, 1, __ATOMIC_SEQ_CST);
    changed = sieve_copy_code(code_rw, new_code, sizeof new_code, serialize, NULL);
    __atomic_store_n(&copying, 0, __ATOMIC_SEQ_CST);
    return changed;
}

/* An invalid replacement of bundle 0: refused by sieve_validate_replacement (it is never copied). */
static void refuse(const char *what, size_t at, uint8_t byte) {
    uint8_t old_code[SIEVE_BUNDLE_SIZE], new_code[SIEVE_BUNDLE_SIZE];
    findings_t f;
    size_t n;
    memset(&f, 0, sizeof f);
    memcpy(old_code, code_rw, sizeof old_code);
    memcpy(new_code, old_code, sizeof new_code);
    new_code[at] = byte;
    n = sieve_validate_replacement(&module, old_code, new_code, sizeof new_code, (uint64_t)(uintptr_t)code_rx, collect, &f);
    if (n) printf("invalid replacement (%s): refused (%zu %s: %s)\n", what, n, plural(n), f.kinds);
    else { printf("invalid replacement (%s): accepted\n", what); fail("an invalid replacement was accepted"); }
}

/* ---- the sandbox thread ---------------------------------------------------------------------------- */

/* Two CPUs of this process's affinity mask, when it has two: the sandbox thread runs on one and the JIT on the other,
   so that the copies race the running code (on one CPU the sandbox thread is never mid-loop while the JIT copies). */
static int cpus[2] = {-1, -1};
static void pick_cpus(void) {
    cpu_set_t set;
    int c, found = 0;
    if (sched_getaffinity(0, sizeof set, &set) != 0) return;
    for (c = 0; c < CPU_SETSIZE && found < 2; c++)
        if (CPU_ISSET(c, &set)) cpus[found++] = c;
    if (found < 2) cpus[0] = cpus[1] = -1;
}
static void pin(int cpu) {
    cpu_set_t set;
    if (cpu < 0) return;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    if (sched_setaffinity(0, sizeof set, &set) != 0) die("sched_setaffinity");   /* 0: the calling thread */
}

static void *run_sandbox(void *arg) {
    static uint8_t altstack[64 * 1024];
    stack_t ss;
    (void)arg;
    pin(cpus[0]);
    ss.ss_sp = altstack; ss.ss_size = sizeof altstack; ss.ss_flags = 0;
    if (sigaltstack(&ss, NULL) != 0) die("sigaltstack");   /* the handler must not run on the sandbox's stack */
    jit_enter((uint64_t)(uintptr_t)r15, (uint64_t)(uintptr_t)(r15 + DATA + DATA_SIZE), (uint64_t)(uintptr_t)code_rx);
    __atomic_store_n(&thread_left, 1, __ATOMIC_SEQ_CST);
    return NULL;
}

/* Waits up to `seconds` for the value at VALUE to be v. Returns the counter then, or -1. */
static long long wait_value(uint32_t v, double seconds) {
    double deadline = now() + seconds;
    while (now() < deadline) {
        if (load32(VALUE) == v) return (long long)load64(COUNTER);
        sched_yield();
    }
    return -1;
}

/* ---- /proc/self/maps: W^X, and executable code pages = verified pages ----------------------------- */

static void check_maps(void) {
    FILE *maps = fopen("/proc/self/maps", "r");
    char line[512], perms[8];
    char state[CODE_PAGES];
    unsigned long lo, hi;
    size_t k, executable = 0;
    int wx = 0, mismatched = 0;
    memset(state, '?', sizeof state);
    if (!maps) die("/proc/self/maps");
    while (fgets(line, sizeof line, maps)) {
        if (sscanf(line, "%lx-%lx %4s", &lo, &hi, perms) != 3) continue;
        if (perms[1] == 'w' && perms[2] == 'x') wx = 1;
        for (k = 0; k < CODE_PAGES; k++) {
            uintptr_t page = (uintptr_t)code_rx + k * PAGE;
            if (page >= lo && page < hi) state[k] = perms[2] == 'x' ? 'x' : perms[0] == '-' && perms[1] == '-' ? '-' : '!';
        }
    }
    fclose(maps);
    for (k = 0; k < CODE_PAGES; k++) {
        executable += state[k] == 'x';
        if ((state[k] == 'x') != page_verified(k) || state[k] == '!' || state[k] == '?') mismatched = 1;
    }
    if (wx) fail("a mapping is writable and executable");
    if (mismatched) fail("the executable pages of the code region are not the verified pages");
    if (!wx && !mismatched)
        printf("W^X held: no mapping writable and executable; executable code pages = verified pages (%zu of %u)\n",
               executable, CODE_PAGES);
}

/* ---- main ------------------------------------------------------------------------------------------- */

int main(int argc, char **argv) {
    int run_refused = argc > 1 && !strcmp(argv[1], "--run-refused");
    void (*serialize)(void *) = sync_cores;
    struct sigaction sa;
    findings_t f;
    pthread_t thread;
    uint8_t *reservation, *trampoline;
    uint64_t exit_stub = (uint64_t)(uintptr_t)jit_exit;
    long long at_copy, seen;
    long changed;
    size_t n;
    int fd, k;
    double deadline;

    setvbuf(stdout, NULL, _IOLBF, 0);   /* the fault handler writes to fd 1 and exits at once */

    /* 1. The sandbox: one PROT_NONE reservation, guards included; then the pieces, each with its own rights. */
    reservation = mmap(NULL, GUARD + SANDBOX + GUARD, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (reservation == MAP_FAILED) die("reserve the sandbox");
    r15 = reservation + GUARD;
    fd = memfd_create("sieve-jit-code", MFD_CLOEXEC);
    if (fd < 0) die("memfd_create");
    if (ftruncate(fd, CODE_SIZE) != 0) die("ftruncate");
    code_rx = mmap(r15 + CODE, CODE_SIZE, PROT_NONE, MAP_SHARED | MAP_FIXED, fd, 0);
    code_rw = mmap(NULL, CODE_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (code_rx != r15 + CODE || code_rw == MAP_FAILED) die("map the code region");
    if (mprotect(r15 + DATA, DATA_SIZE, PROT_READ | PROT_WRITE) != 0) die("map the data");
    /* The trampoline: trusted, written here, then read-only and executable (never both writable and executable):
         48 b8 <jit_exit>   movabs $jit_exit, %rax
         ff e0              jmp *%rax                       then HLT to the end of the page */
    trampoline = mmap(r15 + TRAMPOLINE, PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
    if (trampoline != r15 + TRAMPOLINE) die("map the trampoline");
    memset(trampoline, HLT, PAGE);
    trampoline[0] = 0x48; trampoline[1] = 0xB8;
    memcpy(trampoline + 2, &exit_stub, 8);
    trampoline[10] = 0xFF; trampoline[11] = 0xE0;
    if (mprotect(trampoline, PAGE, PROT_READ | PROT_EXEC) != 0) die("protect the trampoline");
    printf("sandbox: r15 with 40 GiB guards; trampoline at r15+0x10000 (trusted); code region r15+0x20000, %u pages "
           "(memfd: executable view in the sandbox, writable view outside it); data at r15+0x40000\n", CODE_PAGES);

    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_fault;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGSEGV, &sa, NULL) || sigaction(SIGBUS, &sa, NULL) || sigaction(SIGILL, &sa, NULL)) die("sigaction");

    /* 2. The module, then the code a page at a time: written, verified, and only then executable. */
    if (!sieve_module_init(&module, (uint64_t)(uintptr_t)code_rx, CODE_SIZE, loaded)) { fail("sieve_module_init"); return 1; }
    emit_page0(code_rw, FIRST);
    n = load_page(0, &f);
    if (n) { printf("page 0: refused (%zu findings: %s)\n", n, f.kinds); fail("page 0 refused"); return 1; }
    printf("page 0: verified, mapped executable\n");
    if (run_refused) emit_bad(code_rw + PAGE); else emit_page1(code_rw + PAGE);
    n = load_page(1, &f);
    if (run_refused) {
        printf("page 1: refused (%zu %s: %s), left unmapped; running the loop anyway\n", n, plural(n), f.kinds);
        if (!n) { fail("the escape was accepted"); return 1; }
        __atomic_store_n((uint32_t *)(r15 + STOP), 1, __ATOMIC_SEQ_CST);   /* straight to page 1 */
        if (pthread_create(&thread, NULL, run_sandbox, NULL)) die("pthread_create");
        for (deadline = now() + 10; now() < deadline && !__atomic_load_n(&thread_left, __ATOMIC_SEQ_CST);) pause_briefly();
        printf("FAIL: the unverified page ran, or nothing happened\n");
        return 1;
    }
    if (n) { printf("page 1: refused (%zu findings: %s)\n", n, f.kinds); fail("page 1 refused"); return 1; }
    printf("page 1: verified, mapped executable\n");

    /* 3. A bad page, refused and left unmapped; a verified page cannot be verified (and so changed) again. */
    emit_bad(code_rw + 2 * PAGE);
    n = load_page(2, &f);
    if (n) printf("bad page 2: refused (%zu %s: %s), left unmapped\n", n, plural(n), f.kinds);
    else fail("the bad page was accepted");
    memset(code_rw + 2 * PAGE, HLT, PAGE);   /* a JIT drops refused code */
    n = load_page(0, &f);
    if (n && strstr(f.kinds, "layout")) printf("page 0 again: refused (%zu %s: %s)\n", n, plural(n), f.kinds);
    else fail("a second verification of page 0 was not refused as a layout finding");

    /* 4. The serializer: every thread of this process serialises its instruction stream before it next runs. */
    if (syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_SYNC_CORE, 0, 0) == 0)
        printf("serializer: membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED_SYNC_CORE)\n");
    else {
        printf("serializer: none (membarrier SYNC_CORE unavailable: %s); copying with fences only\n", strerror(errno));
        serialize = NULL;
    }

    /* 5. Run the loop on its own thread; change its immediate while it runs. */
    pick_cpus();
    pin(cpus[1]);
    printf("threads: %s\n", cpus[0] < 0 ? "one CPU, the copies do not race the loop" : "the loop and the JIT on two CPUs");
    if (pthread_create(&thread, NULL, run_sandbox, NULL)) die("pthread_create");
    if (wait_value(FIRST, 5) < 0) { fail("the sandbox thread never stored 0x11111111"); return 1; }
    printf("sandbox thread: running page 0, storing 0x%08x\n", FIRST);

    refuse("opcode b8 -> b9, mov to %ecx", 0, 0xB9);
    refuse("jmp retargeted into the middle of an instruction", 31, 0xE1);
    refuse("addq immediate 1 -> 2, not a modifiable form", 19, 0x02);

    __atomic_store_n(&patch_lo, (uintptr_t)code_rx, __ATOMIC_SEQ_CST);
    __atomic_store_n(&patch_hi, (uintptr_t)code_rx + 1, __ATOMIC_SEQ_CST);   /* the HLT lands on the mov's first byte */
    changed = replace_immediate(SECOND, serialize, &f);
    at_copy = (long long)load64(COUNTER);   /* the copy is complete: the next iteration runs the new instruction */
    seen = wait_value(SECOND, 5);
    if (changed != 1) { printf("FAIL: replacement: %ld (%zu findings: %s)\n", changed, f.count, f.kinds); return 1; }
    printf("replacement validated, copied: 1 instruction changed\n");
    if (seen < 0) { fail("the new immediate was never stored"); return 1; }
    printf("patched immediate 0x%08x -> 0x%08x: new value seen after %lld iterations\n", FIRST, SECOND,
           seen - at_copy < 0 ? 0 : seen - at_copy);

    /* The same a thousand times, watching for a torn instruction: every stored value is b * 0x01010101 for a byte b
       of the immediates used (a mix of two of them is not), and the thread never faults but on the HLT. */
    {
        int torn = 0;
        uint32_t last = SECOND;
        for (k = 0; k < STRESS; k++) {
            uint32_t v = 0x01010101u * (uint32_t)(0x23 + k % 0x50), s;
            if (replace_immediate(v, serialize, &f) != 1) { fail("a stress replacement"); break; }
            last = v;
            s = load32(VALUE);
            if (s % 0x01010101u || s / 0x01010101u < 0x11 || s / 0x01010101u > 0x72) torn++;
        }
        if (wait_value(last, 5) < 0) fail("the last stress immediate was never stored");
        else if (torn) fail("a torn immediate was stored");
        else printf("stress: %d more replacements while the loop ran, no torn instruction, last value seen\n", STRESS);
    }

    /* 6. Stop the loop: it leaves through page 1's masked jump and the trampoline back into jit_enter's caller. */
    __atomic_store_n((uint32_t *)(r15 + STOP), 1, __ATOMIC_SEQ_CST);
    for (deadline = now() + 5; now() < deadline && !__atomic_load_n(&thread_left, __ATOMIC_SEQ_CST);) pause_briefly();
    if (!__atomic_load_n(&thread_left, __ATOMIC_SEQ_CST)) { fail("the sandbox thread did not leave"); return 1; }
    pthread_join(thread, NULL);
    printf("sandbox thread: left through the trampoline after %llu iterations\n", (unsigned long long)load64(COUNTER));
    printf("HLT traps retried during copies: %lu\n", __atomic_load_n(&retries, __ATOMIC_SEQ_CST));
    check_maps();

    if (failures) { printf("FAILED: %d checks\n", failures); return 1; }
    printf("all checks held\n");
    return 0;
}
