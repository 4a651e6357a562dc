#ifndef SIEVE_CZYDIS_SHIM_H
#define SIEVE_CZYDIS_SHIM_H
// Zydis is a test oracle: one call that answers "how long is the instruction here, if any".
#include <Zydis/Zydis.h>

typedef struct { ZydisDecoder decoder; } sieve_zydis;

static inline void sieve_zydis_init(sieve_zydis *z) {
    ZydisDecoderInit(&z->decoder, ZYDIS_MACHINE_MODE_LONG_64, ZYDIS_STACK_WIDTH_64);
}

/// Length of the instruction at `code`, or 0 when Zydis finds no valid instruction there.
static inline int sieve_zydis_length(const sieve_zydis *z, const unsigned char *code, size_t size,
                                     int *mnemonic) {
    ZydisDecodedInstruction insn;
    if (!ZYAN_SUCCESS(ZydisDecoderDecodeInstruction(&z->decoder, ZYAN_NULL, code, size, &insn))) return 0;
    if (mnemonic) *mnemonic = (int)insn.mnemonic;
    return insn.length;
}

static inline const char *sieve_zydis_mnemonic_name(int mnemonic) {
    return ZydisMnemonicGetString((ZydisMnemonic)mnemonic);
}
#endif
