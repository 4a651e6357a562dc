/*
 * EVA harness for a generated verifier (Scripts/prove): sieve_verify on every code buffer of up to
 * SIEVE_PROOF_MAX bytes (default 256) of unknown content, of any length up to that, at any base, once
 * with no report callback and once with one. EVA then reports every possible runtime error (alarm).
 */
#include "__fc_builtin.h"
#include "sieve_verifier.h"

#ifndef SIEVE_PROOF_MAX
#define SIEVE_PROOF_MAX 256
#endif

static uint8_t code[SIEVE_PROOF_MAX];
static size_t reported, warnings;

/* A callback that reads every field of the finding it is handed. */
static void count_finding(const sieve_finding *finding, void *ctx) {
    size_t *seen = ctx;
    *seen += finding->offset < SIEVE_PROOF_MAX;
    if (finding->warning) warnings++;
    reported += (size_t)finding->kind + (finding->form >= 0) + (finding->rule >= 0) + (finding->reason >= 0) + finding->length;
}

int main(void) {
    size_t size, seen = 0;
    uint64_t base;
    Frama_C_make_unknown((char *)code, SIEVE_PROOF_MAX);
    size = Frama_C_size_t_interval(0, SIEVE_PROOF_MAX);
    base = Frama_C_unsigned_long_long_interval(0, ~0ULL);
    (void)sieve_verify(code, size, base, NULL, NULL);
    (void)sieve_verify(code, size, base, count_finding, &seen);
    return 0;
}
