/*
 * EVA harness for a generated verifier's dynamic-code and threads API (Scripts/prove): a module at any base, of any
 * size up to MODULE_BUNDLES bundles (sieve_module_init refuses what is not whole bundles); a region of code of
 * unknown content and any length up to SIEVE_PROOF_MAX verified into it at any address; a replacement of unknown
 * content validated there and copied over live code; the code patched in place; and the code split into pieces,
 * each verified on its own, its jumps judged on the module, and joined (as the split cuts it, and in two by hand). EVA then reports every possible runtime error (alarm) on the way.
 */
#include "__fc_builtin.h"
#include "sieve_verifier.h"

#ifndef SIEVE_PROOF_MAX
#define SIEVE_PROOF_MAX 256
#endif
#define MODULE_BUNDLES 64
#define PIECES 4
#define CUT (SIEVE_PROOF_MAX / 2 / SIEVE_BUNDLE_SIZE * SIEVE_BUNDLE_SIZE)

static uint8_t code[SIEVE_PROOF_MAX], replacement[SIEVE_PROOF_MAX], live[SIEVE_PROOF_MAX], loaded[MODULE_BUNDLES / 8];
static sieve_piece pieces[PIECES];

/* Callbacks that read every field they are handed. */
static void count_finding(const sieve_finding *finding, void *ctx) {
    *(size_t *)ctx += finding->offset + finding->length + (size_t)finding->kind + (finding->form >= 0) + (finding->rule >= 0) +
                      (finding->reason >= 0) + (finding->warning != 0);
}
static void count_site(const sieve_site *site, void *ctx) {
    int k;
    *(size_t *)ctx += site->offset + (size_t)site->length + (site->form >= 0) + (site->rule >= 0);
    for (k = 0; k < site->length; k++) *(size_t *)ctx += site->bytes[k];
}

int main(void) {
    sieve_module m = {0, 0, loaded};   /* (set before sieve_module_init: EVA's states do not relate m to its result) */
    size_t size, n, k, seen = 0;
    uint64_t base, address;
    Frama_C_make_unknown((char *)code, SIEVE_PROOF_MAX);
    Frama_C_make_unknown((char *)replacement, SIEVE_PROOF_MAX);
    Frama_C_make_unknown((char *)live, SIEVE_PROOF_MAX);
    size = Frama_C_size_t_interval(0, SIEVE_PROOF_MAX);
    base = Frama_C_unsigned_long_long_interval(0, ~0ULL);
    if (sieve_module_init(&m, base, Frama_C_unsigned_long_long_interval(0, MODULE_BUNDLES * SIEVE_BUNDLE_SIZE), loaded)) {
        address = Frama_C_unsigned_long_long_interval(0, ~0ULL);
        (void)sieve_verify_region(&m, code, size, address, count_finding, &seen);
        (void)sieve_validate_replacement(&m, code, replacement, size, address, count_finding, &seen);
    }
    (void)sieve_copy_code(live, replacement, size, NULL, NULL);
    (void)sieve_patch(code, size, base, Frama_C_interval(0, 1), count_site, &seen);
    n = sieve_split(size, base, pieces, PIECES);
    for (k = 0; k < n && k < PIECES; k++) sieve_verify_piece(code, size, base, &pieces[k]);
    for (k = 0; k < n && k < PIECES; k++) sieve_judge_piece(code, size, base, pieces, n, k);
    (void)sieve_join(code, size, base, pieces, n, count_finding, &seen);
    /* Two pieces cut by hand, at the bundle in the middle of the largest code (the split makes one below SIEVE_MIN_PIECE
       bytes; a cut of one value: EVA's intervals do not relate a cut to the size): the jumps between pieces judged on
       the pieces' maps, one piece's by the caller, the other's by the join. */
    if (CUT && size >= CUT) {
        pieces[0] = pieces[1] = (sieve_piece){0};
        pieces[0].to = pieces[1].from = CUT; pieces[1].to = size;
        sieve_verify_piece(code, size, base, &pieces[0]);   /* (not a loop: EVA would merge the two pieces' states) */
        sieve_verify_piece(code, size, base, &pieces[1]);
        sieve_judge_piece(code, size, base, pieces, 2, 1);   /* piece 0's jumps: the join's */
        (void)sieve_join(code, size, base, pieces, 2, count_finding, &seen);
    }
    return 0;
}
