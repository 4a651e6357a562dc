#ifndef SIEVE_CZYDIS_SHIM_H
#define SIEVE_CZYDIS_SHIM_H
// Zydis is a test oracle (one call that answers "how long is the instruction here, if any") and
// the decoder of the independent sandbox specification (the flat full-operand view below).
#include <Zydis/Zydis.h>
#include <string.h>

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
// ---------------------------------------------------------------------------------------------
// The independent sandbox specification (Sources/Specification) reads Zydis's full operand view
// through one flat struct: Swift sees no anonymous unions and no pointers into Zydis's tables.

/// One decoded operand, flattened. Fields that do not apply to `type` are zero.
typedef struct {
    ZydisOperandType type;
    ZydisOperandVisibility visibility;
    unsigned actions;                 // ZydisOperandActions bits
    unsigned size;                    // bits
    ZydisRegister reg;                // type REGISTER
    ZydisMemoryOperandType mem_type;  // type MEMORY
    ZydisRegister mem_segment, mem_base, mem_index;
    unsigned mem_scale;
    int mem_has_displacement;
    long long mem_displacement;
    int imm_is_relative, imm_is_signed; // type IMMEDIATE
    unsigned long long imm;           // as decoded (sign-extended when signed)
} sieve_spec_operand;

/// One decoded instruction with every operand (explicit, implicit and hidden).
typedef struct {
    unsigned length;
    ZydisMnemonic mnemonic;
    ZydisInstructionCategory category;
    ZydisBranchType branch_type;
    unsigned address_width, operand_width;
    unsigned long long attributes;    // ZYDIS_ATTRIB_* bits
    unsigned cpu_flags_accessed;      // tested | modified | set_0 | set_1 | undefined
    unsigned imm0_size;               // bits of the first encoded immediate (0 when none)
    unsigned operand_count;
    sieve_spec_operand operands[ZYDIS_MAX_OPERAND_COUNT];
} sieve_spec_instruction;

/// Decodes one instruction in 64-bit mode with full operand information (not the minimal mode).
/// Returns 0 when Zydis finds no valid instruction at `code`.
static inline int sieve_spec_decode(const unsigned char *code, size_t size, sieve_spec_instruction *out) {
    ZydisDecoder decoder;
    if (!ZYAN_SUCCESS(ZydisDecoderInit(&decoder, ZYDIS_MACHINE_MODE_LONG_64, ZYDIS_STACK_WIDTH_64))) return 0;
    if (!ZYAN_SUCCESS(ZydisDecoderEnableMode(&decoder, ZYDIS_DECODER_MODE_MINIMAL, ZYAN_FALSE))) return 0;
    ZydisDecodedInstruction insn;
    ZydisDecodedOperand ops[ZYDIS_MAX_OPERAND_COUNT];
    if (!ZYAN_SUCCESS(ZydisDecoderDecodeFull(&decoder, code, size, &insn, ops))) return 0;
    memset(out, 0, sizeof *out);
    out->length = insn.length;
    out->mnemonic = insn.mnemonic;
    out->category = insn.meta.category;
    out->branch_type = insn.meta.branch_type;
    out->address_width = insn.address_width;
    out->operand_width = insn.operand_width;
    out->attributes = insn.attributes;
    if (insn.cpu_flags) {
        out->cpu_flags_accessed = insn.cpu_flags->tested | insn.cpu_flags->modified | insn.cpu_flags->set_0
            | insn.cpu_flags->set_1 | insn.cpu_flags->undefined;
    }
    out->imm0_size = insn.raw.imm[0].size;
    out->operand_count = insn.operand_count;
    for (unsigned i = 0; i < insn.operand_count && i < ZYDIS_MAX_OPERAND_COUNT; i++) {
        const ZydisDecodedOperand *o = &ops[i];
        sieve_spec_operand *r = &out->operands[i];
        r->type = o->type;
        r->visibility = o->visibility;
        r->actions = o->actions;
        r->size = o->size;
        switch (o->type) {
        case ZYDIS_OPERAND_TYPE_REGISTER: r->reg = o->reg.value; break;
        case ZYDIS_OPERAND_TYPE_MEMORY:
            r->mem_type = o->mem.type;
            r->mem_segment = o->mem.segment;
            r->mem_base = o->mem.base;
            r->mem_index = o->mem.index;
            r->mem_scale = o->mem.scale;
            r->mem_has_displacement = o->mem.disp.has_displacement;
            r->mem_displacement = o->mem.disp.value;
            break;
        case ZYDIS_OPERAND_TYPE_IMMEDIATE:
            r->imm_is_relative = o->imm.is_relative;
            r->imm_is_signed = o->imm.is_signed;
            r->imm = o->imm.value.u;
            break;
        default: break;
        }
    }
    return 1;
}

static inline ZydisRegisterClass sieve_spec_register_class(ZydisRegister reg) { return ZydisRegisterGetClass(reg); }
/// The 64-bit register a general-purpose register is part of (EAX, AX, AL, AH -> RAX).
static inline ZydisRegister sieve_spec_register_64(ZydisRegister reg) {
    return ZydisRegisterGetLargestEnclosing(ZYDIS_MACHINE_MODE_LONG_64, reg);
}
static inline const char *sieve_spec_register_name(ZydisRegister reg) {
    const char *name = ZydisRegisterGetString(reg);
    return name ? name : "?";
}
static inline const char *sieve_spec_mnemonic_name(ZydisMnemonic mnemonic) {
    const char *name = ZydisMnemonicGetString(mnemonic);
    return name ? name : "?";
}
static inline const char *sieve_spec_category_name(ZydisInstructionCategory category) {
    const char *name = ZydisCategoryGetString(category);
    return name ? name : "?";
}
/// Zydis's bit macros, as constants Swift can import.
static const unsigned long long sieve_spec_attribute_privileged = ZYDIS_ATTRIB_IS_PRIVILEGED;
/// The flags a sandboxed program may read and write: the arithmetic flags and the direction flag.
static const unsigned sieve_spec_program_flags = ZYDIS_CPUFLAG_CF | ZYDIS_CPUFLAG_PF | ZYDIS_CPUFLAG_AF
    | ZYDIS_CPUFLAG_ZF | ZYDIS_CPUFLAG_SF | ZYDIS_CPUFLAG_OF | ZYDIS_CPUFLAG_DF;
#endif
