/*
 * Sieve's trusted core: the x86-64 decoder and NaCl's sandbox rules, once, over per-policy
 * tables read through one struct. `sieve verify` runs it on tables built in memory; `sieve
 * generate` writes this header and core.c with a policy's tables as static data. What is tested
 * is what is embedded.
 *
 * The tables are the output of Sieve's table compiler (Swift: CompiledPolicy, NaClModel,
 * DecoderTables): every policy and sandbox decision is data here, the core only applies it.
 */
#ifndef SIEVE_CORE_H
#define SIEVE_CORE_H

#include <stddef.h>
#include <stdint.h>

/* Why code is refused: the policy, the decoder, or one rule of the sandbox model. Swift's
   FindingKind lists the same kinds in the same order (a test compares them by name). */
enum sieve_kind {
    SIEVE_BANNED = 0,
    SIEVE_INVALID = 1,
    SIEVE_SANDBOX_FORBIDDEN = 2,
    SIEVE_BUNDLE_CROSSING = 3,
    SIEVE_BAD_JUMP_TARGET = 4,
    SIEVE_UNSAFE_INDIRECT_BRANCH = 5,
    SIEVE_RESERVED_REGISTER_WRITE = 6,
    SIEVE_STACK_POINTER_WRITE = 7,
    SIEVE_UNSAFE_MEMORY_OPERAND = 8,
    SIEVE_UNRESTRICTED_INDEX = 9,
    SIEVE_STRING_OUTSIDE_SEQUENCE = 10,
    SIEVE_CALL_ALIGNMENT = 11,
    SIEVE_LAYOUT = 12,
    SIEVE_REPLACEMENT = 13,
    SIEVE_KIND_COUNT = 14
};
/* Their names, in that order. */
#define SIEVE_KIND_NAMES "banned", "invalid", "sandbox-forbidden", "bundle-crossing", "bad-jump-target", \
    "unsafe-indirect-branch", "reserved-register-write", "stack-pointer-write", "unsafe-memory-operand", \
    "unrestricted-index", "string-outside-sequence", "call-alignment", "layout", "replacement"

typedef struct {
    size_t offset;   /* from the start of the code */
    size_t length;
    int kind;        /* enum sieve_kind */
    int form;        /* database form index, -1 when the bytes do not decode */
    int rule;        /* the policy rule that refused it, -1 for none */
    int warning;     /* 1: a rule set to warn; not a refusal */
    int reason;      /* SIEVE_SANDBOX_FORBIDDEN and friends: the model's reason (sieve_tables.reason_kinds), -1 none */
} sieve_finding;

typedef void (*sieve_report_fn)(const sieve_finding *finding, void *ctx);

/* The model's facts about a form (Swift: CompiledPolicy.ModelFacts reads these values). */
enum sieve_fact {
    SIEVE_F_DIRECT = 1,        /* a direct jump, call or XBEGIN: its target is checked */
    SIEVE_F_CALL = 2,
    SIEVE_F_INDIRECT = 4,      /* only as the last of the masked jump sequence */
    SIEVE_F_RET = 8,
    SIEVE_F_RSI = 16,          /* reads (%rsi): only after mov %esi,%esi; lea (%r15,%rsi),%rsi */
    SIEVE_F_RDI = 32,          /* writes (%rdi): only after mov %edi,%edi; lea (%r15,%rdi),%rdi */
    SIEVE_F_ZERO_EXTENDS = 64, /* NaCl's nacl-amd64-zero-extends: a 32-bit destination restricts its register */
    SIEVE_F_NO_MEMORY = 128,   /* its ModRM memory operand is accessed by nobody (LEA, NOPs, prefetches) */
    SIEVE_F_STACK = 256,       /* pushes, pops, calls: the CPU's own %rsp update */
    SIEVE_F_WRITES = 512,      /* writes a general register at an encoded place */
    SIEVE_F_XBEGIN = 1024,
    SIEVE_F_MEMORY = 2048,     /* accesses its ModRM memory operand */
    SIEVE_F_BIT_OFFSET = 4096, /* a register bit offset moves its memory operand's address (BT, BTS, ...) */
    SIEVE_F_MODIFIABLE = 8192  /* its immediate, displacement or branch offset may change in a code replacement (NaCl's
                                  nacl-amd64-modifiable: mov 88/89/8A/8B/B0+r/B8+r/C6/C7, call rel32) */
};

/* Flags of a form pattern for the core's fast path (Swift: QuickFlags reads these values). */
enum sieve_quick {
    SIEVE_Q_DECODE = 1,        /* decodable there: no register checks, no moffs, not a prefix or escape byte */
    SIEVE_Q_ACCEPT = 2,        /* accepted by the policy outright and by the model but for its writes and memory */
    SIEVE_Q_66 = 4,            /* a lone 66 is neither invalid, refused nor redundant */
    SIEVE_Q_NOP66 = 8,         /* NaCl's NOP prefixes are neither invalid nor refused (no immediate) */
    SIEVE_Q_CALL = 16,
    SIEVE_Q_DIRECT = 32,
    SIEVE_Q_LOOK = 64,         /* an operand-less form (check judges a REX) or a NOP (check judges a 66) */
    SIEVE_Q_NO_MEMORY = 128
};

/* Where a written general register is encoded (low nibble) and its width (high nibble). */
enum sieve_write_slot {
    SIEVE_W_MODRM_REG = 1, SIEVE_W_MODRM_RM = 2, SIEVE_W_OPCODE = 3, SIEVE_W_VVVV = 4, SIEVE_W_RAX = 5,
    SIEVE_W_8 = 0x10, SIEVE_W_16 = 0x20, SIEVE_W_32 = 0x30, SIEVE_W_64 = 0x40, SIEVE_W_WIDTH = 0x70,
    SIEVE_W_ZERO_EXTENDS = 0x80   /* the form's destination, zero-extended when 32 bits wide (nacl-amd64-zero-extends) */
};

/* A pattern's register writes for the fast path (sieve_pattern.writes): the places of the general registers it writes
   (low bits), but for the one it restricts, a zero-extended 32-bit destination, whose place is the high nibble
   (1 ModRM.reg, 2 ModRM.rm, 3 opcode, 4 EAX; 0 none). */
enum sieve_fast_write { SIEVE_FW_REG = 1, SIEVE_FW_RM = 2, SIEVE_FW_OPCODE = 4 };

/* A ModRM byte's entry (sieve_tables.modrm): its key bits (0-17), the SIB and displacement bytes after it (24-27), and: */
enum sieve_modrm_bits {
    SIEVE_M_RIP = 1 << 18,            /* RIP-relative */
    SIEVE_M_SIB = 1 << 19,            /* a SIB byte follows */
    SIEVE_M_MEMORY = 1 << 28,         /* a memory operand */
    SIEVE_M_SIB_NO_BASE5 = 1 << 29    /* mod 0 with a SIB: a SIB base of 5 is no base but a disp32 */
};

/* The fast path's table (sieve_tables.fast; FastTables.swift gathers it from the patterns, where the pattern walk finds
   the same for a whole class of ModRM bytes), one array for one register: fast_entries at SIEVE_FAST_ENTRIES, fast_modrm
   at SIEVE_FAST_MODRM, fast_sib at SIEVE_FAST_SIB, fast_descs at SIEVE_FAST_DESCS (to the end, fast_count). */
enum sieve_fast_bits {
    /* fast_entries[(66 | REX.W >> 2 | (none, F2, F3) << 2 | 12 with a REX) << 9 | opcode (the 0F map: 256 + opcode)]: the length but for the prefixes and the
       bytes after a ModRM (bits 0-3: opcode, ModRM and immediate; 0: the full path's), SIEVE_FE_MODRM when a ModRM follows,
       and the opcode's row in fast_descs (bits 16-31; row 0 takes nothing). */
    SIEVE_FE_MODRM = 7 << 4,
    /* fast_descs[row + slot], the slot from fast_modrm (ModRM.reg << 1 | memory | REX.B << 4): */
    SIEVE_FD_TAKE = 1 << 29,          /* the fast path takes it (0: the full path judges it) */
    SIEVE_FD_SPECIAL = 1 << 30,       /* LOOK, CALL, DIRECT or INDIRECT: the fast path looks closer */
    SIEVE_FD_LOOK = 2,                /* operand-less or a NOP with a REX, or a 66 and memory: only NaCl's nopw */
    SIEVE_FD_CALL = 4,                /* a call: it must end its bundle */
    SIEVE_FD_DIRECT = 8,              /* a direct branch: its immediate is the offset */
    SIEVE_FD_NOP66 = 32,              /* NaCl's NOP prefixes are neither invalid nor refused on it (no immediate) */
    SIEVE_FD_INDIRECT = 64,           /* jmp or call *%reg: only NaCl's masked jump (and $-bundle,%reg32; add %r15,%reg) */
    /* and the fast_modrm bits below it checks (the register written at ModRM.reg or .rm, restricted or not) */
    /* bits 10-14 s, 15-19 k, 20-24 f: the register it restricts is (fast_modrm >> s) & k | f (16: none) */
    /* fast_modrm[(REX & 5) << 8 | ModRM]: the SIB and displacement bytes after it (bits 0-2), and: */
    SIEVE_FM_CHECK = 16,              /* a memory operand, not RIP-relative (descriptor: its memory operand is accessed) */
    SIEVE_FM_SIB = 32,                /* a SIB byte follows */
    SIEVE_FM_BAD_BASE = 64,           /* no SIB, and a base other than %rbp and %r15 */
    SIEVE_FM_REG_R15 = 1 << 7,        /* ModRM.reg is %r15 */
    SIEVE_FM_REG_SANDBOX = 1 << 8,    /* ModRM.reg is %rsp, %rbp or %r15 */
    SIEVE_FM_RM_SANDBOX = 1 << 9,     /* ModRM.rm is the register %rsp, %rbp or %r15 */
    SIEVE_FM_NO_BASE5 = 1 << 10,      /* mod 0 with a SIB (a base of 5 is none): part of the fast_sib index */
    /* bits 11-15: the slot; 16-19: ModRM.reg's register; 20-24: ModRM.rm's register (16: a memory operand) */
    SIEVE_FM_RM_R15 = 1 << 25,        /* ModRM.rm is the register %r15 */
    SIEVE_FM_REG_STACK = 1 << 26,     /* ModRM.reg is %rsp or %rbp */
    SIEVE_FM_RM_STACK = 1 << 27,      /* ModRM.rm is the register %rsp or %rbp */
    SIEVE_FM_WRITES = SIEVE_FM_REG_R15 | SIEVE_FM_REG_SANDBOX | SIEVE_FM_RM_SANDBOX | SIEVE_FM_RM_R15,
    SIEVE_FM_ONES = SIEVE_FD_TAKE | SIEVE_FD_SPECIAL,   /* in every entry: the descriptor's TAKE and SPECIAL pass an & with it */
    /* fast_sib[(fast_modrm & SIEVE_FM_NO_BASE5) | (REX & 3) << 8 | SIB]: the index register (bits 0-4; 16: none), and: */
    SIEVE_FS_BAD_BASE = 32            /* a base other than %rsp, %rbp and %r15, or none */
};
#define SIEVE_FAST_ENTRIES 0      /* 12288 */
#define SIEVE_FAST_MODRM 12288    /* 1536 */
#define SIEVE_FAST_SIB 13824      /* 2048 */
#define SIEVE_FAST_DESCS 15872

/* Canonical-encoding facts in a form's reg_checks (above the decoder's register checks): a VEX/EVEX/XOP
   bit the CPU ignores must be clear (X86's DecoderTableExport.RegisterCheck has the same values). */
enum sieve_reg_check {
    SIEVE_RC_W_IGNORED = 1 << 8,    /* W is ignored (WIG) */
    SIEVE_RC_L_IGNORED = 1 << 9,    /* L is ignored (LIG) */
    SIEVE_RC_REG = 1 << 10,         /* R extends a ModRM.reg register */
    SIEVE_RC_RM = 1 << 11,          /* B extends a ModRM.rm register */
    SIEVE_RC_RM_VECTOR = 1 << 12,   /* EVEX.X extends a ModRM.rm vector register */
    SIEVE_RC_IS4 = 1 << 13          /* imm8[7:4] names a register, imm8[3:0] is ignored */
};

/* Where code runs (sieve_core_run; NULL: a whole static module, whose direct jumps may leave it for any bundle
   start). Dynamic code: a direct jump that leaves the code must land on a bundle start in [lo, hi], the module.
   targets, when not NULL, receives the core's jump-target map: a bit per byte of code (size / 8 + 1 bytes), set
   where a jump may land (an instruction start outside a sanctioned sequence). look, when not NULL, leaves the bad jumps
   to the caller (sieve_core_report_jumps on the maps): 1 there when a direct branch may not land, else 0. */
struct sieve_place { uint64_t lo, hi; uint8_t *targets; int *look; };

/* Where one instruction's fields are (sieve_core_decode): offsets from its first byte, 0 when absent. */
typedef struct {
    int length, form, refused;
    uint8_t prefixes;    /* legacy and REX prefix bytes before the opcode (or the VEX/EVEX/XOP prefix) */
    uint8_t encoding;    /* 0 legacy, 1 VEX, 2 EVEX, 3 XOP, 4 3DNow! */
    uint8_t map;         /* 0 one-byte, 1 0F, 2 0F38, 3 0F3A (VEX/EVEX/XOP: their map field's meaning) */
    uint8_t opcode_at, modrm_at, disp_at, disp_size, imm_at, imm_size;
    uint8_t memory, rip_relative, index;   /* a ModRM memory operand; RIP-relative; with an index register */
} sieve_layout;

/* A module of dynamic code (sieve_module_init): its address range, and a bit per bundle of it that is
   verified code (the caller's storage, size / bundle size / 8 rounded up, zeroed). */
typedef struct { uint64_t base, size; uint8_t *loaded; } sieve_module;

/* One instruction `sieve_patch` found refused: where, its form, the rewrite rule (-1: derived from the database,
   -2: stubbed with HLT, -3: left as it was), and its new bytes (length of them, readable during the callback only). */
typedef struct { size_t offset; int length, form, rule; const uint8_t *bytes; } sieve_site;
typedef void (*sieve_site_fn)(const sieve_site *site, void *ctx);

/* One piece of a module verified on its own thread (sieve_split, sieve_verify_piece, sieve_judge_piece, sieve_join): its
   bytes [from, to), and what its verification left for the join: its findings (up to capacity: one per 64 bytes, and
   SIEVE_PIECE_FINDINGS at least; more, and the join verifies the module whole), its pass's maps (targets: the
   jump-target map, then sieve_core_run_maps's other two), whether memory ran out or the piece was not one, whether a
   direct branch may not land (look: its bad jumps are judged on the module, sieve_core_judge_piece), whether it refuses
   code and code that may cross its end (late), and whether its jumps were judged. */
#define SIEVE_PIECE_FINDINGS 1024
typedef struct {
    size_t from, to, count, instructions, nfindings, capacity;
    sieve_finding *findings;
    uint8_t *targets;
    int failed, overflowed, look, refuses, late, judged;
} sieve_piece;

#define SIEVE_NO_FORM 65535
#define SIEVE_MAX_BUNDLE 128
/* ACSL that WP alone reads (Scripts/prove defines SIEVE_WP to its argument for WP; empty for every other reader): the
   contracts relating several variables, which WP proves for every input and EVA's intervals cannot check (EVA, which
   proves the absence of runtime errors directly, needs none of them). */
#ifndef SIEVE_WP
#define SIEVE_WP(...)
#endif

/* One opcode of one map: the first pattern per context (none, 66, REX.W; VEX/EVEX/XOP: W0, W1), ModRM, mod ignored. */
struct sieve_entry { uint32_t start[3]; uint8_t has_modrm, mod_ignored; };
/* A form pattern: the instance fields it allows (operand size and W folded in), form, immediate bytes, Q flags, and
   its register writes for the fast path (enum sieve_fast_write). */
struct sieve_pattern { uint64_t allowed; uint16_t form; uint8_t imm, quick, writes; };
/* A policy rule with instance fields: accepts, rule index, operands, sizes, prefixes, registers. */
struct sieve_instance_rule {
    uint8_t accepts; int32_t rule; uint8_t operands, sizes; uint16_t prefixes, register_start; uint8_t register_count;
};
/* A form: decoding facts, then the policy's decision and the sandbox model's facts. */
struct sieve_form {
    uint8_t imm_bytes, moffs, uses_vvvv, vsib; uint32_t classes; uint16_t reg_checks; uint8_t distinct, places[4];
    uint16_t prefix_use; uint8_t decision; int32_t rule; uint16_t conditional_start; uint8_t conditional_count;
    uint32_t facts; uint8_t forbidden, writes[3], implicit_memory, size_memory, size_register;
    uint8_t operands[4]; int16_t fixed[4]; uint16_t implicit_start; uint8_t implicit_count;
};

/* A same-length replacement for a form the policy refuses (`sieve patch`): SIEVE_RW_OPCODE re-encodes the instruction
   as form `to` (the same prefixes and operand bytes under another opcode of the map `map`; legacy encodings may change
   map, VEX/EVEX/XOP only the opcode byte) and pads with NOPs; SIEVE_RW_NOP fills it with NOPs. `rule`: the policy's
   rewrite rule, -1 when the database derived it (the same semantics minus a hint). Sorted by form. */
enum sieve_rewrite_action { SIEVE_RW_OPCODE = 1, SIEVE_RW_NOP = 2 };
struct sieve_rewrite { uint16_t form, to; uint8_t action, map, opcode; int32_t rule; };

/* Everything policy-specific, through one struct. */
struct sieve_tables {
    const struct sieve_entry *entries;             /* 256 per opcode map */
    const struct sieve_pattern *patterns;          /* lists per entry and context, each ending in a catch-all */
    const uint32_t *modrm;                         /* per ModRM byte: key bits, bytes after it, memory, SIB */
    const struct sieve_form *forms;
    const struct sieve_instance_rule *instance_rules;
    const uint16_t *conditional;                   /* instance rules per form, in precedence order */
    const int16_t *rule_registers;                 /* registers the instance rules name */
    const int16_t *implicit_registers;             /* registers the forms use implicitly */
    const uint8_t *reason_kinds;                   /* the finding kind of each model refusal (form.forbidden - 1) */
    const struct sieve_rewrite *rewrites;          /* sorted by form */
    const uint32_t *fast;                          /* the fast path's (enum sieve_fast_bits) */
    uint32_t form_count, reason_count, rewrite_count;
    /* The other arrays' lengths: the core checks every index it reads from a table against them (no verdict depends
       on it, CoreTables makes the indices valid; the proof of the core needs no other fact about the tables). */
    uint32_t pattern_count, instance_rule_count, conditional_count, rule_register_count, implicit_register_count, fast_count;
    uint32_t bundle_size;                          /* a power of two, at most SIEVE_MAX_BUNDLE */
    uint8_t model_none;                            /* 1: the policy and the decoder only, no sandbox rules */
    uint8_t calls_must_align;                      /* 1: a call not ending its bundle is a finding, 0: a warning */
    uint8_t full_path_only;                        /* 1: no fast path (tests hold the fast path to the full one) */
};

/* BEGIN core API (the generated verifier keeps these static behind sieve_verify) */
/* Verifies size bytes of code loaded at virtual address base under the tables. Calls report (if
   not NULL) for each finding and warning; returns the number of findings (0: accepted). */
size_t sieve_core_verify(const struct sieve_tables *t, const uint8_t *code, size_t size, uint64_t base,
                         sieve_report_fn report, void *ctx);
/* The same, and the number of instructions it decoded (instructions may be NULL), for code at
   `place` (NULL: a whole static module). */
size_t sieve_core_run(const struct sieve_tables *t, const uint8_t *code, size_t size, uint64_t base,
                      const struct sieve_place *place, sieve_report_fn report, void *ctx, size_t *instructions);
/* The same in the caller's memory: maps, 3 * (size / 8 + 1) zeroed bytes (a runtime without a heap, and the proof: WP has
   no model of one), whose first third is the jump-target map; NULL: the caller's allocation failed, one SIEVE_INVALID. */
size_t sieve_core_run_maps(const struct sieve_tables *t, const uint8_t *code, size_t size, uint64_t base, const struct sieve_place *place,
                           sieve_report_fn report, void *ctx, size_t *instructions, uint8_t *maps);
/* The bad jump targets alone (the last findings of sieve_core_run_maps), judged on the maps such a run left, a jump that
   leaves the code landing on a bundle start in [lo, hi] (a piece's judgement: none, and the join judges them). */
size_t sieve_core_report_jumps(const struct sieve_tables *t, const uint8_t *code, size_t size, uint64_t base, const uint8_t *maps,
                               uint64_t lo, uint64_t hi, sieve_report_fn report, void *ctx);
/* The core's own name for a finding kind ("banned", "sandbox-forbidden", ...). */
const char *sieve_core_kind_name(int kind);
/* Decodes one instruction: its length (0 when the bytes are not an instruction) and its layout
   (refused: Sieve refuses an encoding the CPU executes). For tests against other decoders, and for
   replacement and patching, which must know where an instruction's fields are. */
int sieve_core_decode(const struct sieve_tables *t, const uint8_t *code, size_t size, sieve_layout *layout);
/* The dynamic-code API (dyncode.c), behind the generated sieve_module_init, sieve_verify_region,
   sieve_validate_replacement, sieve_copy_code and sieve_patch (their comments are there). */
int sieve_core_module_init(const struct sieve_tables *t, sieve_module *m, uint64_t base, uint64_t size, uint8_t *loaded);
size_t sieve_core_verify_region(const struct sieve_tables *t, sieve_module *m, const uint8_t *code, size_t size,
                                uint64_t address, sieve_report_fn report, void *ctx);
size_t sieve_core_validate_replacement(const struct sieve_tables *t, const sieve_module *m, const uint8_t *old_code,
                                       const uint8_t *new_code, size_t size, uint64_t address,
                                       sieve_report_fn report, void *ctx);
long sieve_core_copy(const struct sieve_tables *t, uint8_t *live, const uint8_t *code, size_t size,
                     void (*serialize)(void *), void *ctx);
size_t sieve_core_split(const struct sieve_tables *t, size_t size, uint64_t base, sieve_piece *pieces, size_t n);
void sieve_core_verify_piece(const struct sieve_tables *t, const uint8_t *code, size_t size, uint64_t base, sieve_piece *piece);
void sieve_core_judge_piece(const struct sieve_tables *t, const uint8_t *code, size_t size, uint64_t base, sieve_piece *pieces,
                            size_t n, size_t k);
size_t sieve_core_join(const struct sieve_tables *t, const uint8_t *code, size_t size, uint64_t base, sieve_piece *pieces,
                       size_t n, sieve_report_fn report, void *ctx);
size_t sieve_core_patch(const struct sieve_tables *t, uint8_t *code, size_t size, uint64_t base, int stub_with_hlt,
                        sieve_site_fn site, void *ctx);
/* END core API */

#endif
