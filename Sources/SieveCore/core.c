/*
 * Sieve's trusted core (see sieve_core.h): the same for every policy. The tables decide; this
 * file applies them. `sieve generate` copies it below a policy's tables.
 */
#include "sieve_core.h"

#include <stdlib.h>

#ifndef SIEVE_CORE_API
#define SIEVE_CORE_API
#endif
#if defined(__GNUC__)   /* one decode per instruction on the hot path: inline it where it is called */
#define SIEVE_INLINE inline __attribute__((always_inline))
#define SIEVE_NOINLINE __attribute__((noinline))   /* the fast loop: its registers its own */
#else
#define SIEVE_INLINE
#define SIEVE_NOINLINE
#endif

#define KEY(shift, v) ((uint64_t)1 << ((shift) + (v)))
enum { S_MOD = 0, S_REG = 2, S_RM = 10, S_PFX = 18, S_SIZE = 22, S_ASZ = 25, S_W = 27, S_L = 29, S_REXB = 33 };
enum { P_LOCK = 1, P_REP = 2, P_REPNE = 4, P_66 = 8, P_67 = 16, P_ES = 32, P_CS = 64, P_SS = 128, P_DS = 256, P_FS = 512,
       P_GS = 1024, P_REX = 2048, P_IGNREX = 4096 };
enum { C_LOCK = 1 << 3, C_OPMASK = 1 << 16, C_OPMASK_REQ = 1 << 17, C_ZEROING = 1 << 18, C_BCST = 1 << 19, C_ER = 1 << 20,
       C_SAE = 1 << 21, C_NOP = 1 << 24, C_FORCE64 = 1 << 26, C_NO66 = 1 << 30 };   /* sieve_form.classes (X86 FormClasses) */
#define C_NOF2F3 (1u << 31)

typedef struct {
    int length, form; unsigned prefixes;
    uint8_t prefix_count, refused, rex, opcode, modrm, sib, has_modrm, mem, imm_off, imm_size, table, modrm_at;
    uint8_t vr, vx, vb, vvvv, vw, vl, aaa, z, bcst;
    uint8_t bytes[40];   /* the code from the instruction's start, zero past the readable end: every later read is here */
} insn_t;

/* The legacy prefix each byte is, as a P_ bit (0: not a prefix). */
static const uint16_t prefix_bit[256] = {
    [0xF0] = P_LOCK, [0xF2] = P_REPNE, [0xF3] = P_REP, [0x66] = P_66, [0x67] = P_67, [0x26] = P_ES, [0x2E] = P_CS,
    [0x36] = P_SS, [0x3E] = P_DS, [0x64] = P_FS, [0x65] = P_GS, [0x40] = P_REX, [0x41] = P_REX, [0x42] = P_REX,
    [0x43] = P_REX, [0x44] = P_REX, [0x45] = P_REX, [0x46] = P_REX, [0x47] = P_REX, [0x48] = P_REX, [0x49] = P_REX,
    [0x4A] = P_REX, [0x4B] = P_REX, [0x4C] = P_REX, [0x4D] = P_REX, [0x4E] = P_REX, [0x4F] = P_REX,
};

enum { PU_REPEATS = 8, PU_BRANCH66 = 0x2000 };   /* DecoderTables.PrefixUse: F2/F3 select or repeat; 66 on a branch */

/* The bytes after a ModRM byte whose sieve_modrm entry is m and whose SIB (if any) is sib (the entry's count is at most 5:
   % 8 keeps every read within 32 bytes also for a proof that does not know the table). */
/*@ assigns \nothing; SIEVE_WP(ensures 0 <= \result <= 11;) */
static SIEVE_INLINE int modrm_bytes(uint32_t m, uint8_t sib) { return (int)((m >> 24) % 8) + ((m & SIEVE_M_SIB_NO_BASE5) && sib % 8 == 5 ? 4 : 0); }

/* Whether the registers an instance of form f names break its form's rules (f->reg_checks, f->distinct: encodings the CPU
   refuses), from its ModRM byte and the fields decode has put in o (vr, vx, vb, vvvv within their bits: then the sums
   below are the registers' numbers). */
/*@ requires \valid_read(f) && \valid_read(o);
    assigns \nothing; */
static int bad_registers(const struct sieve_form *f, const insn_t *o, uint8_t modrm, int evex) {
    unsigned reg = modrm / 8 % 8, c = f->reg_checks; int n[4] = {0}, cnt = 0, a, d;
    if (((c & 2) || ((c & 1) && reg)) && (o->vr & 1)) return 1;   /* (bits with the same test, one line) */
    if (((c & (4 | 16)) && o->vr) || ((c & (8 | 32)) && o->vvvv > 7)) return 1;
    if (((c & 64) && o->vb) || ((c & 128) && evex && (o->vr & 2))) return 1;
    /*@ loop unroll 4;
        loop invariant 0 <= a <= 4 && 0 <= cnt <= 4; loop assigns a, cnt, n[0 .. 3]; loop variant 4 - a; */
    for (a = 0; f->distinct && a < 4 && cnt < 4 && f->places[a]; a++) {   /* (cnt <= a: for EVA, which keeps no relations) */
        /*@ assert 0 <= cnt < 4; */
        switch (f->places[a]) {
        case 1: n[cnt++] = (int)reg + o->vr * 8; break;
        case 2: if (!o->mem) n[cnt++] = modrm % 8 + o->vb * 8 + o->vx * 16; break;
        case 3: n[cnt++] = o->vvvv; break;
        default: n[cnt] = o->sib / 8 % 8 + o->vx * 8 + o->vvvv / 16 % 2 * 16; cnt++;
        }
    }
    /*@ loop invariant 0 <= a <= 4; loop assigns a, d; loop variant 4 - a; */
    for (a = 0; a < (f->distinct == 1 ? cnt : (cnt > 0)); a++)
        /*@ loop invariant 1 <= d <= 4; loop assigns d; loop variant 4 - d; */
        for (d = a + 1; d < cnt; d++) if (n[a] == n[d]) return 1;
    return 0;
}

/* Fills o for decode: zeroed, the code from in[at] in o->bytes, zero past limit. */
/*@ SIEVE_WP(requires \valid(o) && at <= limit <= 0x3fffffffffffffff && \valid_read(in + (at .. limit - 1)) && \separated(o, in + (at .. limit - 1));)
    assigns *o; */
static SIEVE_INLINE void fetch(insn_t *o, const uint8_t *in, size_t at, size_t limit) {
    insn_t z = {0}; size_t k;
    if (at + sizeof z.bytes <= limit)   /* (a loop WP proves, not memcpy: clang -O2 makes it 3 vector moves after an overlap check) */
        /*@ loop invariant 0 <= k <= 40; loop assigns k, z.bytes[0 .. 39]; loop variant 40 - k; */
        for (k = 0; k < sizeof z.bytes; k++) z.bytes[k] = in[at + k];
    else
        /*@ loop invariant 0 <= k <= 40; loop assigns k, z.bytes[0 .. 39]; loop variant 40 - k; */
        for (k = 0; k < sizeof z.bytes; k++) { size_t pos = at + k; z.bytes[k] = pos < limit ? in[pos] : 0; }
    *o = z;
}

/* The VEX (C5), VEX or XOP (C4, 8F: p0 p1) or EVEX (62: p0 p1 p2) prefix b: its fields into o, its pp into *sel, and
   its opcode map's table (5 to 15, EVEX 8 to 12), 0 when it is invalid. */
/*@ requires \valid(o) && \valid(sel) && \separated(o, sel);
    assigns o->vr, o->vx, o->vb, o->vw, o->vvvv, o->vl, o->z, o->aaa, o->bcst, *sel;
    SIEVE_WP(ensures \result == 0 || (5 <= \result <= 15 && o->vr <= 3 && o->vx <= 1 && o->vb <= 1 && o->vw <= 1 && o->vvvv <= 31 && o->vl <= 3 && *sel <= 3);) */
static SIEVE_INLINE int vector_prefix(insn_t *o, uint8_t b, uint8_t p0, uint8_t p1, uint8_t p2, unsigned *sel) {
    uint8_t map = p0 & 0x1F;
    if (b == 0xC5) {   /* (vx, vb, vw: 0 as fetch left them, set for the proof) */
        o->vr = (uint8_t)((~p0 >> 7) & 1); o->vx = o->vb = o->vw = 0; o->vvvv = (uint8_t)((~p0 >> 3) & 15); o->vl = (p0 >> 2) & 1; *sel = p0 & 3;
        return 5;
    }
    if (b == 0x62) {
        if ((p0 & 8) || !(p1 & 4)) return 0;
        o->vr = (uint8_t)((p0 & 0x80 ? 0 : 1) + (p0 & 0x10 ? 0 : 2)); o->vx = (uint8_t)((~p0 >> 6) & 1); o->vb = (uint8_t)((~p0 >> 5) & 1);
        o->vw = (p1 >> 7) & 1; o->vvvv = (uint8_t)(~((p1 >> 3 & 15) | (p2 & 8 ? 16 : 0)) & 31); *sel = p1 & 3;   /* (R, R', V' inverted) */
        o->z = p2 >> 7; o->vl = (p2 >> 5) & 3; o->bcst = (p2 >> 4) & 1; o->aaa = p2 & 7;
        switch (p0 & 7) { case 1: case 2: case 3: return 7 + (p0 & 7); case 5: case 6: return 6 + (p0 & 7); default: return 0; }
    }
    o->vr = (uint8_t)((~p0 >> 7) & 1); o->vx = (uint8_t)((~p0 >> 6) & 1); o->vb = (uint8_t)((~p0 >> 5) & 1);
    o->vw = (p1 >> 7) & 1; o->vvvv = (uint8_t)((~p1 >> 3) & 15); o->vl = (p1 >> 2) & 1; *sel = p1 & 3;
    if (b == 0xC4) return map < 1 || map > 3 ? 0 : 4 + map;
    return map > 10 ? 0 : 5 + map;
}

/* Whether Sieve refuses the encoding decode has put in o (o->refused): one the CPU executes, ignoring a REX prefix, a
   66 on a 64-bit branch or a REX.W on a far transfer, or a VEX/EVEX/XOP bit it ignores that is set. */
/*@ requires \valid_read(o) && \valid_read(f) && o->imm_off < 40;
    assigns \nothing; */
static SIEVE_INLINE int refused_encoding(const insn_t *o, const struct sieve_form *f, int vec, int evex) {
    unsigned p = o->prefixes, c = f->reg_checks, mod = o->modrm >> 6, rm = o->modrm & 7, reg = (o->modrm >> 3) & 7, w = o->rex & 8;
    int sib = o->mem && rm == 4, base = !(mod == 0 && rm == 5) && !(sib && mod == 0 && (o->sib & 7) == 5);
    if ((p & P_IGNREX) || ((f->classes & C_FORCE64) && (p & P_66) && !w)) return 1;
    if (w && o->table == 0 && o->opcode == 0xFF && o->has_modrm && (reg == 3 || reg == 5)) return 1;
    if (w && o->table == 1 && (o->opcode == 0xB2 || o->opcode == 0xB4 || o->opcode == 0xB5)) return 1;
    if (!vec) return 0;   /* canonical encodings: a VEX/EVEX/XOP bit the CPU ignores must be clear (R, X, B inverted) */
    if (((c & SIEVE_RC_W_IGNORED) && o->vw) || ((c & SIEVE_RC_L_IGNORED) && o->vl && !(evex && o->bcst && !o->mem))) return 1;
    if ((!(c & SIEVE_RC_REG) && o->vr) || (o->vx && !(o->mem ? sib : evex && (c & SIEVE_RC_RM_VECTOR)))) return 1;
    return (o->vb && !(o->mem ? base : o->has_modrm && (c & SIEVE_RC_RM))) || ((c & SIEVE_RC_IS4) && (o->bytes[o->imm_off] & 15));
}

/* The form of the first pattern from k whose allowed bits cover key (the list ends in a catch-all whose form is
   SIEVE_NO_FORM: invalid), or -1: none, or no form of the table. */
/*@ requires \valid_read(t) && \valid_read(t->patterns + (0 .. t->pattern_count - 1));
    assigns \nothing;
    SIEVE_WP(ensures -1 <= \result < t->form_count;) */
static SIEVE_INLINE int find_form(const struct sieve_tables *t, size_t k, uint64_t key) {
    int form;
    /*@ loop assigns k; loop variant t->pattern_count - k; */
    for (; k < t->pattern_count && (key & ~t->patterns[k].allowed); k++) {}
    return k < t->pattern_count && (form = t->patterns[k].form) < (int)t->form_count ? form : -1;   /* (form: for EVA, which bounds a variable) */
}

/* Whether form f is #UD with the prefixes decode found (p) or the VEX/EVEX/XOP fields it put
   in o: a LOCK but on a lockable form's memory, a 66 or an F2/F3 the form takes none of, a vvvv, mask, zeroing or
   broadcast it has no use for. */
/*@ requires \valid_read(o) && \valid_read(f);
    assigns \nothing; */
static SIEVE_INLINE int invalid_for_form(const insn_t *o, const struct sieve_form *f, unsigned p, int vec, int evex, int taken) {
    if (((p & P_LOCK) && !((f->classes & C_LOCK) && o->mem)) || ((f->classes & C_NO66) && (p & P_66)) || ((f->classes & C_NOF2F3) && (p & (P_REP | P_REPNE)))) return 1;
    if (vec && !f->uses_vvvv && (o->vvvv & 15)) return 1;
    if (!evex) return 0;
    if ((!f->uses_vvvv && !f->vsib && o->vvvv) || (o->aaa && !(f->classes & C_OPMASK)) || (!o->aaa && (f->classes & C_OPMASK_REQ))) return 1;
    if (o->z && (!(f->classes & C_ZEROING) || !o->aaa)) return 1;
    return o->bcst && (o->mem || !taken ? !(f->classes & C_BCST) : !(f->classes & (C_ER | C_SAE)));
}

/* The legacy and REX prefixes from code[0]: their P_ bits in *p, the REX byte that counts in *rex (0: none, or one a
   legacy prefix after it makes the CPU ignore), in *sel the last of F3 (2) and F2 (3), else 66 (1), else 0. Returns how
   many there are, -1 when they reach end (the bytes there are, at most 15): no instruction follows. */
/*@ requires \valid_read(code + (0 .. 39)) && end <= 15 && \valid(p) && \valid(rex) && \valid(sel) && \separated(p, rex, sel, code + (0 .. 39));
    assigns *p, *rex, *sel;
    SIEVE_WP(ensures -1 <= \result <= 14 && *sel <= 3;) */
static SIEVE_INLINE int prefixes(const uint8_t *code, int end, unsigned *p, uint8_t *rex, unsigned *sel) {
    unsigned bit; uint8_t b; int i;
    /*@ loop unroll 15;
        loop invariant 0 <= i <= 14 && *sel <= 3; loop assigns i, b, bit, *p, *rex, *sel; loop variant 14 - i; */
    for (*p = *rex = 0, *sel = 0, i = 0; (bit = prefix_bit[b = code[i]]) != 0; i++) {
        if (bit == P_REX) { if (*rex) *p |= P_IGNREX; *rex = b; }
        else { if ((b & 0xFE) == 0xF2) *sel = b == 0xF3 ? 2 : 3; if (*rex) { *p |= P_IGNREX; *rex = 0; } }
        *p |= bit; if (i + 1 >= end) return -1;
    }
    if (!*sel && (*p & P_66)) *sel = 1;
    return i;
}

/* The opcode map at o->bytes[*i], after the prefixes: 0 (one-byte), 1 to 3 (0F, 0F 38, 0F 3A), 4 (0F 0F: 3DNow!, whose
   opcode comes last) or a VEX/EVEX/XOP map (vector_prefix: 5 to 15, its fields into o and *sel, EVEX 8 to 12), with *i
   past the bytes that select it; -1 when the vector prefix is invalid. */
/*@ requires \valid(o) && \valid(i) && \valid(sel) && \separated(o, i, sel) && 0 <= *i <= 14 && *sel <= 3;
    assigns *i, *sel, o->vr, o->vx, o->vb, o->vw, o->vvvv, o->vl, o->z, o->aaa, o->bcst;
    SIEVE_WP(ensures -1 <= \result <= 15 && \old(*i) <= *i <= \old(*i) + 4;
             ensures \result >= 0 ==> o->vvvv <= 31 && o->vl <= 3 && *sel <= 3;
             ensures \result >= 5 ==> o->vr <= 3 && o->vx <= 1 && o->vb <= 1 && o->vw <= 1;) */
static SIEVE_INLINE int opcode_map(insn_t *o, int *i, unsigned *sel) {
    const uint8_t *code = o->bytes + *i; uint8_t b = code[0]; int table;
    o->vvvv = o->vl = 0;   /* (0 as fetch left them, for the proof; a VEX/EVEX/XOP prefix sets them) */
    if (b == 0x0F) { table = code[1] == 0x38 ? 2 : code[1] == 0x3A ? 3 : code[1] == 0x0F ? 4 : 1; *i += table > 1 ? 2 : 1; return table; }
    if (b != 0xC5 && b != 0xC4 && !(b == 0x8F && (code[1] & 0x1F) >= 8) && b != 0x62) return 0;
    table = vector_prefix(o, b, code[1], code[2], code[3], sel); *i += b == 0xC5 ? 2 : b == 0x62 ? 4 : 3;
    return table ? table : -1;
}

/* The form of the instruction decode has read up to its immediate (o: its prefixes, map, opcode, ModRM and vector
   fields; e: its opcode's entry; i: where the immediate starts; sel: F3/F2/66 or the vector pp), checked against what
   the form allows, with the rest of o: the immediate, the REX fields, length and form. Returns 0 (invalid) or 1. */
/*@ SIEVE_WP(requires \valid(o) && \valid_read(t) && \valid_read(e) && \valid_read(t->modrm + (0 .. 255));
    requires \valid_read(t->patterns + (0 .. t->pattern_count - 1)) && \valid_read(t->forms + (0 .. t->form_count - 1));
    requires \separated(o, t) && \separated(o, e) && 1 <= i <= 32 && end <= 15 && sel <= 3 && o->vl <= 3 && o->vvvv <= 31;
    requires o->table >= 5 ==> o->vr <= 3 && o->vx <= 1 && o->vb <= 1 && o->vw <= 1;)
    assigns o->imm_off, o->imm_size, o->vr, o->vx, o->vb, o->vw, o->length, o->form, o->refused;
    SIEVE_WP(ensures \result == 0 || 1 <= o->length <= 15; ensures \result == 0 || 0 <= o->form < t->form_count;
             ensures \result == 0 || o->imm_off + o->imm_size <= 15; ensures \result == 0 || (o->vr <= 3 && o->vx <= 1 && o->vb <= 1);) */
static SIEVE_INLINE int decode_form(const struct sieve_tables *t, insn_t *o, const struct sieve_entry *e, int i, int end, unsigned sel) {
    const unsigned p = o->prefixes, rex = o->rex; const int vec = o->table >= 5, evex = o->table >= 8 && o->table <= 12;
    const struct sieve_form *f; int imm, form;
    /* The instance's fields, one bit each, against the patterns of its context (operand size and W folded in). */
    uint64_t key = (t->modrm[o->has_modrm ? o->modrm : 0xC0] & 0x3FFFF) | KEY(S_PFX, sel) | KEY(S_ASZ, (p & P_67) ? 0 : 1) | KEY(S_REXB, rex & 1);
    key |= KEY(S_L, evex && o->bcst && o->has_modrm && !o->mem ? 2 : o->vl);   /* EVEX.b on registers: rounding, the length 512 */
    /* the list ends in a catch-all (SIEVE_NO_FORM: invalid); the bound only keeps a bad table from reading past it */
    if ((form = find_form(t, e->start[vec ? o->vw : (rex & 8) ? 2 : (p & P_66) ? 1 : 0], key)) < 0) return 0;
    f = &t->forms[form]; imm = f->imm_bytes + (f->moffs ? ((p & P_67) ? 4 : 8) : 0);
    o->imm_off = (uint8_t)i; o->imm_size = (uint8_t)imm;
    if ((i += imm) > end) return 0;
    if (o->table == 4 && i > 0) { o->imm_off = (uint8_t)(i - 1); o->imm_size = 1; }   /* (i > 0: for EVA, which relates no two variables) */
    if (invalid_for_form(o, f, p, vec, evex, o->has_modrm)) return 0;
    if (!vec) { o->vr = rex / 4 % 2; o->vx = rex / 2 % 2; o->vb = rex % 2; o->vw = rex / 8 % 2; }   /* (no REX: 0, as fetch left them) */
    o->length = i; o->form = form;
    if (((f->reg_checks & 0xFF) || f->distinct) && bad_registers(f, o, o->modrm, evex)) return 0;
    o->refused = (uint8_t)refused_encoding(o, f, vec, evex);
    return 1;
}

/* Decodes the instruction at in[at..limit) into *o. Returns 0 (invalid) or 1. Never reads past limit: the bytes
   are copied into o->bytes, zero-padded near the end, so that no read below needs a bounds check (every index
   stays below 40) and one length check decides truncation (every byte read counts in it). */
/*@ SIEVE_WP(requires \valid_read(t) && \valid(o) && at <= limit <= 0x3fffffffffffffff && \valid_read(in + (at .. limit - 1));
    requires \valid_read(t->entries + (0 .. 16 * 256 - 1)) && \valid_read(t->modrm + (0 .. 255));
    requires \valid_read(t->patterns + (0 .. t->pattern_count - 1)) && \valid_read(t->forms + (0 .. t->form_count - 1));
    requires \separated(o, t) && \separated(o, t->entries + (0 .. 16 * 256 - 1)) && \separated(o, in + (at .. limit - 1));)
    assigns *o;
    SIEVE_WP(ensures \result == 0 || 1 <= o->length <= 15; ensures \result == 0 || 0 <= o->form < t->form_count;
             ensures \result == 0 || o->imm_off + o->imm_size <= 15; ensures \result == 0 || (o->vr <= 3 && o->vx <= 1 && o->vb <= 1);
             ensures \result == 0 || (o->prefix_count <= 15 && o->vvvv <= 31);) */
static SIEVE_INLINE int decode(const struct sieve_tables *t, const uint8_t *in, size_t at, size_t limit, insn_t *o) {
    uint8_t rex, op = 0, modrm = 0; const uint8_t *code = o->bytes; size_t avail = limit - at; unsigned p, sel;
    const struct sieve_entry *e; int i, end = avail < 15 ? (int)avail : 15, table, taken; fetch(o, in, at, limit);
    if ((i = prefixes(code, end, &p, &rex, &sel)) < 0) return 0;
    o->prefix_count = (uint8_t)i;
    if ((table = opcode_map(o, &i, &sel)) < 0 || (table >= 5 && ((p & (P_66 | P_REP | P_REPNE | P_LOCK)) || rex))) return 0;
    if (table != 4) op = code[i++];
    e = &t->entries[table * 256 + op];
    if ((taken = table == 4 || e->has_modrm)) {
        o->modrm_at = (uint8_t)i; modrm = (uint8_t)(e->mod_ignored ? 0xC0 + code[i] % 64 : code[i]); i++;   /* (mod ignored: 3, registers) */
        if ((o->mem = modrm < 0xC0) && (modrm & 7) == 4) o->sib = code[i];
        i += modrm_bytes(t->modrm[modrm], o->sib);
    }
    if (table == 4) { op = code[i++]; e = &t->entries[4 * 256 + op]; }
    o->rex = rex; o->prefixes = p; o->opcode = op; o->modrm = modrm; o->has_modrm = (uint8_t)taken; o->table = (uint8_t)table;
    return decode_form(t, o, e, i, end, sel);
}

/* ---- policy: the per-form decision, instance rules for the rest ---------------------------- */

/*@ requires \valid_read(i) && \valid_read(f);
    assigns \nothing; */
static int rex_bit_used(const insn_t *i, const struct sieve_form *f, uint8_t rex) {
    unsigned u = f->prefix_use;
    if ((u & 0x1000) && ((!i->has_modrm && (i->opcode & 7) >= 4 && (u & 0x800)) ||
                         (i->has_modrm && ((((i->modrm >> 3) & 7) >= 4 && (u & 0x200)) || (!i->mem && (i->modrm & 7) >= 4))))) return 1;
    if (((rex & 8) && ((u & 0x100) || ((u & 0x2000) && (i->prefixes & P_66)))) || ((rex & 4) && (u & 0x200))) return 1;
    if ((rex & 2) && i->has_modrm && i->mem && (i->modrm & 7) == 4) return 1;
    if ((rex & 1) && (i->mem || (i->has_modrm && (u & 0x400)) || (u & 0x800))) return 1;
    return 0;
}

/* Whether prefix byte b (the last of its group) has an effect on this instruction. */
/*@ requires \valid_read(i) && \valid_read(f);
    assigns \nothing; */
static int prefix_effective(const insn_t *i, const struct sieve_form *f, uint8_t b) {
    unsigned u = f->prefix_use; int memory = i->mem || (u & 4);
    switch (b) {
    case 0xF0: return 1;
    case 0x66: return (u & 1) != 0;
    case 0x67: return memory || (u & 2);
    case 0xF2: case 0xF3:
        if ((u & 8) || (i->prefixes & P_LOCK)) return 1;
        return b == 0xF2 ? (u & 16) != 0 : ((u & 32) && i->mem);
    case 0x26: case 0x2E: case 0x36: case 0x3E:
        if (u & 64) return b == 0x2E || b == 0x3E;
        return b == 0x3E && (u & 128);
    case 0x64: case 0x65: return memory;
    default: if (b == i->rex) return rex_bit_used(i, f, b);   /* (a statement of its own: WP proves it) */
    }
    return 0;
}

/* Whether a prefix is redundant; legacy_only: ignore REX bytes (NaCl admits optional REX bits). */
/*@ requires \valid_read(t) && \valid_read(i) && i->form < t->form_count && \valid_read(t->forms + i->form) && i->prefix_count <= 15;
    assigns \nothing; */
static int has_redundant_prefix(const struct sieve_tables *t, const insn_t *i, int legacy_only) {
    const struct sieve_form *f = &t->forms[i->form]; unsigned seen = 0, g; int k;
    /*@ loop invariant -1 <= k < 15;
        loop assigns k, seen, g;
        loop variant k + 1; */
    for (k = i->prefix_count - 1; k >= 0; k--) {
        uint8_t b = i->bytes[k];
        g = b == 0xF0 ? 1u : (b == 0xF2 || b == 0xF3) ? 2u : (b == 0x66) ? 8u : (b == 0x67) ? 16u : (b & 0xF0) == 0x40 ? 32u : 4u;
        if (((seen & g) || !prefix_effective(i, f, b)) && !(legacy_only && g == 32u)) return 1;
        seen |= g;
    }
    return 0;
}

/* Whether the n bytes at a are those of the string b (memcmp's == 0, in terms WP proves). */
/*@ requires 0 <= n <= 15 && \valid_read(a + (0 .. n - 1)) && \valid_read(b + (0 .. n - 1));
    assigns \nothing; */
static int same(const uint8_t *a, const char *b, int n) {
    int k = 0;
    /*@ loop invariant 0 <= k <= 15; loop assigns k; loop variant n - k; */
    while (k < n && a[k] == (uint8_t)b[k]) k++;
    return k == n;
}

/* NaCl's padding NOPs: 66{1,6} 2E 0F 1F 84 00 00 00 00 00. */
/*@ requires 0 <= n <= 15 && \valid_read(c + (0 .. 14));
    assigns \nothing; */
static int nacl_nop(const uint8_t *c, int n) {
    return n >= 10 && n <= 15 && same(c, "\x66\x66\x66\x66\x66\x66", n - 9) && same(c + n - 9, "\x2e\x0f\x1f\x84\x00\x00\x00\x00\x00", 9);
}

/* NaCl's other 66-prefixed NOPs with a memory operand (nops.def): nopw 0(%rax,%rax,1), 6 and 9 bytes. */
/*@ requires \valid_read(c + (0 .. 8));
    assigns \nothing; */
static int nacl_nopw(const uint8_t *c, int n) {
    return (n == 6 && same(c, "\x66\x0f\x1f\x44\x00\x00", 6)) || (n == 9 && same(c, "\x66\x0f\x1f\x84\x00\x00\x00\x00\x00", 9));
}

/*@ requires 0 <= file < 32 && -1 <= number < 32;
    assigns \nothing; */
static int register_id(int file, int number, int rex) {
    if (file == 1 && number >= 4 && number < 8 && !rex) return 15 * 32 + number;  /* AH..BH */
    return file * 32 + (file == 5 || file == 9 || file == 10 || file == 11 ? number & 7 : number);   /* (files of 8 registers) */
}

/* The prefixes an instance has, as the bits of sieve_instance_rule.prefixes (but 8192, redundant: has_redundant_prefix). */
/*@ requires \valid_read(i);
    assigns \nothing; */
static unsigned prefix_set(const insn_t *i) {
    unsigned p = i->prefixes;
    return (p & P_LOCK ? 1u : 0) | (p & P_REP ? 2u : 0) | (p & P_REPNE ? 4u : 0) | (p & P_REX ? 8u : 0) | ((i->rex & 8) ? 16u : 0) | (p & P_66 ? 32u : 0) |
           (p & P_67 ? 64u : 0) | (p & P_CS ? 128u : 0) | (p & P_DS ? 256u : 0) | (p & P_ES ? 512u : 0) | (p & P_SS ? 1024u : 0) | (p & P_FS ? 2048u : 0) | (p & P_GS ? 4096u : 0);
}

#define NO_ID (-65536)   /* no register: below every register_id and every int16_t a table names */

/* The register (register_id) the instance names in each of form f's explicit operands, into ids (NO_ID: none). Loop
   invariants here and below bound by constants, not by each other: EVA checks them too, and keeps no relations. */
/*@ requires \valid_read(f) && \valid_read(i) && \valid(ids + (0 .. 3));
    requires i->vr <= 3 && i->vx <= 1 && i->vb <= 1 && i->vvvv <= 31;
    assigns ids[0 .. 3]; */
static void operand_registers(const struct sieve_form *f, const insn_t *i, int *ids) {
    int a;
    /*@ loop unroll 4;
        loop invariant 0 <= a <= 4; loop assigns a, ids[0 .. 3]; loop variant 4 - a; */
    for (a = 0; a < 4; a++) {
        int place = f->operands[a] % 8, file = f->operands[a] / 8, number = -1;
        ids[a] = NO_ID;
        if (!f->operands[a]) break;   /* (the list ends at a zero) */
        if (place == 1) number = (i->modrm / 8 % 8) + i->vr * 8;
        else if (place == 2 && !i->mem) number = (i->modrm % 8) + i->vb * 8 + ((file >= 6 && file <= 8) ? i->vx * 16 : 0);
        else if (place == 3) number = i->vvvv;
        else if (place == 4) number = (i->opcode % 8) + i->vb * 8;
        else if (place == 5) ids[a] = f->fixed[a];
        if (number >= 0) ids[a] = register_id(file, number, i->rex != 0);
    }
}

/* Whether register want is one of ids[0..4) or one form f uses implicitly (an index past the table's end: none). */
/*@ requires \valid_read(t) && \valid_read(f) && \valid_read(ids + (0 .. 3));
    requires \valid_read(t->implicit_registers + (0 .. t->implicit_register_count - 1));
    assigns \nothing; */
static int uses_register(const struct sieve_tables *t, const struct sieve_form *f, const int *ids, int want) {
    int a; unsigned implicit;
    /*@ loop invariant 0 <= a <= 4; loop assigns a; loop variant 4 - a; */
    for (a = 0; a < 4; a++) if (ids[a] == want) return 1;
    /*@ loop invariant 0 <= a <= 255; loop assigns a, implicit; loop variant f->implicit_count - a; */
    for (a = 0; a < f->implicit_count; a++) if ((implicit = f->implicit_start + (unsigned)a) < t->implicit_register_count && t->implicit_registers[implicit] == want) return 1;
    return 0;
}

/*@ requires \valid_read(t) && \valid_read(i) && \valid_read(r) && 0 <= i->form < t->form_count && \valid_read(t->forms + i->form);
    requires i->prefix_count <= 15 && i->vr <= 3 && i->vx <= 1 && i->vb <= 1 && i->vvvv <= 31;
    requires \valid_read(t->rule_registers + (0 .. t->rule_register_count - 1));
    requires \valid_read(t->implicit_registers + (0 .. t->implicit_register_count - 1));
    assigns \nothing; */
static int instance_matches(const struct sieve_tables *t, const struct sieve_instance_rule *r, const insn_t *i) {
    const struct sieve_form *f = &t->forms[i->form];
    int k, ids[4] = {NO_ID, NO_ID, NO_ID, NO_ID}, found = 0;
    if (r->operands && !(r->operands & (i->mem ? 1 : 2))) return 0;
    if (r->sizes && !(r->sizes & (i->mem ? f->size_memory : f->size_register))) return 0;
    if (r->prefixes && !(r->prefixes & (prefix_set(i) | ((r->prefixes & 8192u) && has_redundant_prefix(t, i, 0) ? 8192u : 0)))) return 0;
    if (!r->register_count) return 1; else operand_registers(f, i, ids);
    /*@ loop invariant 0 <= k <= 255; loop assigns k, found; loop variant r->register_count - k; */
    for (k = 0; k < r->register_count && !found; k++) {   /* indices past a table's end (never made) name no register */
        unsigned named = r->register_start + (unsigned)k;
        found = uses_register(t, f, ids, named < t->rule_register_count ? t->rule_registers[named] : -1);
    }
    return found;
}

/* 1: accepted; 0: refused, *rule the deciding rule (-1: nothing trusts it). */
/*@ requires \valid_read(t) && \valid_read(i) && 0 <= i->form < t->form_count && \valid_read(t->forms + i->form);
    requires i->prefix_count <= 15 && i->vr <= 3 && i->vx <= 1 && i->vb <= 1 && i->vvvv <= 31;
    requires \valid_read(t->conditional + (0 .. t->conditional_count - 1));
    requires \valid_read(t->instance_rules + (0 .. t->instance_rule_count - 1));
    requires \valid_read(t->rule_registers + (0 .. t->rule_register_count - 1));
    requires \valid_read(t->implicit_registers + (0 .. t->implicit_register_count - 1));
    requires \valid(rule) && \separated(rule, i);
    assigns *rule; */
static int policy_accepts(const struct sieve_tables *t, const insn_t *i, int *rule) {
    const struct sieve_form *f = &t->forms[i->form]; int k;
    /*@ loop invariant -1 <= k <= 254; loop assigns k; loop variant k + 1; */
    for (k = (int)f->conditional_count - 1; k >= 0; k--) {   /* an index past a table's end (never made) matches nothing */
        unsigned c = f->conditional_start + (unsigned)k, r = c < t->conditional_count ? t->conditional[c] : t->instance_rule_count;
        if (r < t->instance_rule_count && instance_matches(t, &t->instance_rules[r], i)) { *rule = t->instance_rules[r].rule; return t->instance_rules[r].accepts; }
    }
    *rule = f->rule;
    return f->decision == 0;
}

/* ---- the sandbox: NaCl's x86-64 rules (model none: the policy and the decoder only) --------- */

typedef struct {
    const struct sieve_tables *t; const uint8_t *code;
    size_t size, count, instructions;
    uint64_t base, lo, hi;   /* a direct jump leaving the code lands on a bundle start in [lo, hi] */
    sieve_report_fn report; void *ctx;
    uint8_t *valid, *targets;   /* a bit per byte of code, 1: a direct jump may land here (valid), lands here (targets) */
} pass_t;
/* (at is in the code: the bound is for the proof) */
/*@ requires \valid_read(s) && \valid(s->valid + (0 .. s->size / 8));
    assigns s->valid[0 .. s->size / 8]; */
static void mark(pass_t *s, size_t at, int valid) { if (at < s->size) s->valid[at / 8] = (uint8_t)((s->valid[at / 8] & ~(1u << at % 8)) | (unsigned)(valid != 0) << at % 8); }

/* The user's report callback, behind the one contract WP assumes and does not prove (the callback is the user's): it
   reads the finding and changes nothing the core reads. */
/*@ requires \valid_read(s) && \valid_read(f);
    assigns \nothing; */
static void report(const pass_t *s, const sieve_finding *f) { if (s->report) s->report(f, s->ctx); }

/*@ requires \valid(s);
    assigns s->count; */
static void emit(pass_t *s, int kind, size_t offset, int length, int form, int rule, int warning) {
    sieve_finding f = {offset, (size_t)length, kind, form, rule, warning, -1};   /* (reason: none) */
    s->count += !warning; report(s, &f);
}

/* The model refuses the form outright: its reason, and the kind of finding that reason is. */
/*@ requires \valid(s) && \valid_read(s->t) && 0 <= form < s->t->form_count && \valid_read(s->t->forms + form);
    requires \valid_read(s->t->reason_kinds + (0 .. s->t->reason_count - 1));
    assigns s->count; */
static void emit_forbidden(pass_t *s, size_t offset, int length, int form) {
    const int reason = s->t->forms[form].forbidden - 1;
    sieve_finding f = {offset, (size_t)length, reason >= 0 && (uint32_t)reason < s->t->reason_count ? s->t->reason_kinds[reason] : SIEVE_SANDBOX_FORBIDDEN, form, -1, 0, reason};
    s->count++; report(s, &f);
}

/*@ requires \valid(s) && \valid_read(s->t) && \valid_read(i) && \separated(s, i);
    requires 0 <= i->form < s->t->form_count && \valid_read(s->t->forms + i->form);
    requires i->prefix_count <= 15 && i->vr <= 3 && i->vx <= 1 && i->vb <= 1 && i->vvvv <= 31;
    requires \valid_read(s->t->conditional + (0 .. s->t->conditional_count - 1));
    requires \valid_read(s->t->instance_rules + (0 .. s->t->instance_rule_count - 1));
    requires \valid_read(s->t->rule_registers + (0 .. s->t->rule_register_count - 1));
    requires \valid_read(s->t->implicit_registers + (0 .. s->t->implicit_register_count - 1));
    assigns s->count; */
static int policy_check(pass_t *s, const insn_t *i, size_t at) {
    const struct sieve_tables *t = s->t; int rule = -1;
    if (i->refused) { emit(s, SIEVE_INVALID, at, i->length, i->form, -1, 0); return 0; }
    if (t->forms[i->form].decision == 0 && !t->forms[i->form].conditional_count) return 1;
    if (!policy_accepts(s->t, i, &rule)) emit(s, SIEVE_BANNED, at, i->length, i->form, rule, 0);
    return 1;
}

/* 1 stack move, 2 re-base of %rsp, 3 re-base of %rbp (NaCl's sanctioned forms), 0 none. */
/*@ requires 0 <= n <= 15 && \valid_read(c + (0 .. 14));
    assigns \nothing; */
static int special(const uint8_t *c, int n) {
    uint8_t r = c[0], o = c[1], m = c[2];   /* (c holds 15 bytes) */
    if (n < 3) return 0;
    if (n == 3) {
        if ((r == 0x48 || r == 0x4A) && ((o == 0x89 && (m == 0xE5 || m == 0xEC)) || (o == 0x8B && (m == 0xEC || m == 0xE5)))) return 1;
        if ((r == 0x4C || r == 0x4E) && (o == 0x01 || o == 0x09) && m == 0xFC) return 2;
        if ((r == 0x4C || r == 0x4E) && o == 0x01 && m == 0xFD) return 3;
        if ((r == 0x49 || r == 0x4B) && (o == 0x03 || o == 0x0B) && m == 0xE7) return 2;
        if ((r == 0x49 || r == 0x4B) && o == 0x03 && m == 0xEF) return 3;
        return 0;
    }
    if (n == 4 && r == 0x48 && o == 0x83 && m == 0xE4) return c[3] >= 0x80;
    /* lea (%rsp|%rbp,%r15,1) with no or a zero displacement */
    if (r != 0x4A || o != 0x8D || (n != 4 && n != 5 && n != 8) || (n == 4 ? m != 0x24 : n == 5 ? c[4] || (m != 0x64 && m != 0x6C)
        : (c[4] | c[5] | c[6] | c[7]) || (m != 0xA4 && m != 0xAC)))
        return 0;
    return c[3] == 0x3C && (m & 0x38) == 0x20 ? 2 : c[3] == 0x3D && (m & 0x38) == 0x28 ? 3 : 0;
}

/* The first 4 bytes of an earlier instruction (zero past the code): the sanctioned sequences' members are that short. */
/*@ requires \valid_read(s) && \valid_read(s->code + (0 .. s->size - 1)) && \valid(w + (0 .. 3));
    requires \separated(w + (0 .. 3), s);
    assigns w[0 .. 3]; */
static void earlier(const pass_t *s, size_t from, uint8_t w[4]) {
    /*@ loop invariant 0 <= k <= 4;
        loop assigns k, pos, w[0 .. 3];
        loop variant 4 - k; */
    for (size_t k = 0, pos = from; k < 4; k++, pos++) w[k] = pos < s->size ? s->code[pos] : 0;
}

/*@ requires \valid_read(c + (0 .. 3)) && 0 <= reg < 16;
    assigns \nothing; */
static int is_mask(const uint8_t *c, int n, int reg, uint32_t bundle_size) {
    if (n == 4) { if ((c[0] & 0xF0) != 0x40 || (c[0] & 8) || (c[0] & 1) != (reg >> 3)) return 0; c++; n--; }
    else if (reg >= 8) return 0;
    return n == 3 && c[0] == 0x83 && c[1] == (0xE0 | (reg & 7)) && c[2] == (uint8_t)(256 - bundle_size);
}

/*@ requires \valid_read(c + (0 .. 3)) && 0 <= reg < 16;
    assigns \nothing; */
static int is_add_r15(const uint8_t *c, int n, int reg) {
    if (n != 3 || (c[0] & 0xF8) != 0x48) return 0;
    if (c[1] == 0x01) return (c[0] & 4) && (c[0] & 1) == (reg >> 3) && c[2] == (0xF8 | (reg & 7));
    if (c[1] == 0x03) return (c[0] & 1) && ((c[0] >> 2) & 1) == (reg >> 3) && c[2] == (0xC7u | (unsigned)(reg & 7) << 3);
    return 0;
}

/*@ requires \valid_read(c + (0 .. 3));
    assigns \nothing; */
static int is_mov_self(const uint8_t *c, int n, uint8_t modrm) {
    if (n == 3 && (c[0] | 2) == 0x42) { c++; n--; }   /* (NaCl's REX_X: 40 or 42) */
    return n == 2 && (c[0] == 0x89 || c[0] == 0x8B) && c[1] == modrm;
}

/* The target (an offset from the code's start) of a direct branch at code[at..at+length) whose displacement is the size
   bytes at p. */
/*@ requires \valid_read(p + (0 .. 3)) && at <= 0x3fffffffffffffff && 0 <= length <= 64;
    assigns \nothing; */
static SIEVE_INLINE int64_t jump_target(size_t at, size_t length, const uint8_t *p, size_t size) {
    int64_t d = size == 1 ? (int8_t)p[0] : size == 2 ? (int16_t)(uint16_t)(p[0] | (unsigned)p[1] << 8)
        : (int32_t)((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24);
    return (int64_t)(at + length) + d;
}

/* Whether a direct branch may land at target: in the code, at an instruction start valid marks; outside, on a bundle
   start in [lo, hi]. */
/*@ requires \valid_read(valid + (0 .. size / 8));
    assigns \nothing; */
static int jump_lands(const uint8_t *valid, size_t size, uint64_t base, uint64_t lo, uint64_t hi, uint64_t mask, int64_t target) {
    uint64_t to = base + (uint64_t)target;
    return target >= 0 && (uint64_t)target < size ? (valid[(uint64_t)target / 8] >> (uint64_t)target % 8) & 1 : !(to & mask) && to >= lo && to <= hi;
}

/*@ requires \valid(s) && \valid_read(s->t) && \valid_read(i);
    assigns s->count; */
static void call_alignment(pass_t *s, size_t end, const insn_t *i, size_t at) {
    if ((s->base + end) & (s->t->bundle_size - 1)) emit(s, SIEVE_CALL_ALIGNMENT, at, i->length, i->form, -1, !s->t->calls_must_align);
}

#define REFUSE(kind) emit(s, kind, at, i->length, i->form, -1, 0)
/* The register form f's register writes restrict (-1 none), refusing a write to %r15 and one to %rsp or %rbp but a
   re-basing's first half (a loop of its own, proven on its own). */
/*@ requires \valid(s) && \valid_read(i) && \valid_read(f) && \separated(s, i) && i->vr <= 3 && i->vb <= 1;
    assigns s->count;
    ensures -1 <= \result <= 31; */
static int register_writes(pass_t *s, const insn_t *i, const struct sieve_form *f, size_t at) {
    int restricts = -1, stack = -1, k;
    /*@ loop invariant 0 <= k <= 3 && -1 <= restricts <= 31 && -1 <= stack <= 15;
        loop assigns k, restricts, stack, s->count;
        loop variant 3 - k; */
    for (k = 0; k < 3 && f->writes[k]; k++) {
        int slot = f->writes[k], width = slot & SIEVE_W_WIDTH, zx = (slot & SIEVE_W_ZERO_EXTENDS) && width == SIEVE_W_32, place = slot & 15;
        /* the register written (5: EAX named by the form, add eax, imm32), -1 none; / 8 % 8, + and * 8 as in
           operand_registers: on these bits the same as >> 3 & 7, | and << 3, in terms the provers bound */
        int n = place == 1 ? i->modrm / 8 % 8 + i->vr * 8 : place == 2 ? (i->mem ? -1 : i->modrm % 8 + i->vb * 8)
            : place == 3 ? i->opcode % 8 + i->vb * 8 : place == 4 ? i->vvvv % 16 : place == 5 ? 0 : -1;
        if (n < 0 || (width == 0x10 && n >= 4 && n < 8 && !i->rex)) continue;
        if (n == 15) REFUSE(SIEVE_RESERVED_REGISTER_WRITE);
        else if (n == 4 || n == 5) {
            /* only zero-extended, as the first half of a re-basing, and only one (xchg %esp,%ebp: not both) */
            if (!zx || stack >= 0) REFUSE(SIEVE_STACK_POINTER_WRITE);
            else stack = n;
        } else if (zx && restricts < 0) restricts = n;
    }
    return stack >= 0 ? stack : restricts;
}

/* The tables check and the functions after it read: their arrays readable to their lengths (CoreTables builds them so; the generated
   verifier's EVA run checks them as data), the bundle size a power of two at most SIEVE_MAX_BUNDLE. */
/*@ predicate tables_ok(struct sieve_tables *t) = \valid_read(t) && \valid_read(t->entries + (0 .. 16 * 256 - 1)) &&
      \valid_read(t->modrm + (0 .. 255)) && \valid_read(t->patterns + (0 .. t->pattern_count - 1)) &&
      \valid_read(t->forms + (0 .. t->form_count - 1)) && \valid_read(t->conditional + (0 .. t->conditional_count - 1)) &&
      \valid_read(t->instance_rules + (0 .. t->instance_rule_count - 1)) && \valid_read(t->rule_registers + (0 .. t->rule_register_count - 1)) &&
      \valid_read(t->implicit_registers + (0 .. t->implicit_register_count - 1)) && \valid_read(t->reason_kinds + (0 .. t->reason_count - 1)) &&
      (t->bundle_size == 1 || t->bundle_size == 2 || t->bundle_size == 4 || t->bundle_size == 8 || t->bundle_size == 16 ||
       t->bundle_size == 32 || t->bundle_size == 64 || t->bundle_size == 128); */
/* The fast path's table (the generator asserts it, CoreTables.invariantViolations): every opcode's row of 32 descriptors. */
/*@ predicate fast_rows(uint32_t *fast) = \valid_read(fast + (0 .. SIEVE_FAST_DESCS + 31)) &&
      \forall integer k; 0 <= k < SIEVE_FAST_MODRM ==> \valid_read(fast + (SIEVE_FAST_DESCS + (fast[k] >> 16) .. SIEVE_FAST_DESCS + (fast[k] >> 16) + 31)); */

/* The facts every part of check reads: the pass (its maps and code), the instruction decode gave and its form. */
/*@ predicate checkable(pass_t *s, insn_t *i, struct sieve_form *f) = \valid(s) && \valid_read(i) && \valid_read(f) &&
      \valid(s->valid + (0 .. s->size / 8)) && \valid_read(s->code + (0 .. s->size - 1)) && \valid_read(s->t) &&
      \separated(s, i) && \separated(s->valid + (0 .. s->size / 8), s, i) && i->vr <= 3 && i->vx <= 1 && i->vb <= 1; */

/* Default deny: every ModRM memory operand unless none is accessed (VSIB forms are refused whole) is based on %rsp,
   %rbp or %r15 (or RIP-relative), and indexed by nothing or by the register the instruction before restricts
   (pending), which a jump may then not come between: its start is no place to land. */
/*@ requires checkable(s, i, f);
    assigns s->count, s->valid[0 .. s->size / 8]; */
static void memory_operand(pass_t *s, const insn_t *i, const struct sieve_form *f, size_t at, int pending) {
    int mod = i->modrm >> 6, rm = i->modrm % 8, base = -1, index = -1;
    if (i->mem && (f->facts & SIEVE_F_BIT_OFFSET)) REFUSE(SIEVE_UNSAFE_MEMORY_OPERAND);
    if (!i->mem || (f->facts & SIEVE_F_NO_MEMORY) || f->vsib || (mod == 0 && rm == 5)) return;   /* (RIP-relative: fine) */
    if (rm == 4) {
        int sb = i->sib % 8, si = i->sib / 8 % 8 + i->vx * 8;
        if (!(sb == 5 && mod == 0)) base = sb + i->vb * 8;
        if (si != 4) index = si;
    } else base = rm + i->vb * 8;
    if (base != 15 && base != 4 && base != 5) REFUSE(SIEVE_UNSAFE_MEMORY_OPERAND);   /* (none: -1) */
    if (base < 0 || index < 0) return;
    if (index == pending && pending != 4 && pending != 5) mark(s, at, 0);
    else REFUSE(SIEVE_UNRESTRICTED_INDEX);
}

/* An indirect jump or call: only NaCl's masked jump (and $-bundle,%reg32; add %r15,%reg; jmp or call *%reg) in one
   bundle, whose middle and end no jump may land on. prev: the starts of the bundle's instructions (nprev of them)
   before this one's at prev[nprev]. */
/*@ requires checkable(s, i, f) && 0 <= nprev <= SIEVE_MAX_BUNDLE && \valid_read(prev + (0 .. nprev));
    assigns s->count, s->valid[0 .. s->size / 8]; */
static void indirect_branch(pass_t *s, const insn_t *i, const struct sieve_form *f, size_t at, const size_t *prev, int nprev) {
    uint8_t mask[4] = {0}, add[4] = {0};   /* the two instructions before it: their first bytes */
    int reg = i->modrm % 8 + i->vb * 8;
    if (nprev >= 2) { earlier(s, prev[nprev - 2], mask); earlier(s, prev[nprev - 1], add); }
    if (i->mem || nprev < 2 || reg == 15 || !is_mask(mask, (int)(prev[nprev - 1] - prev[nprev - 2]), reg, s->t->bundle_size) ||
        !is_add_r15(add, (int)(at - prev[nprev - 1]), reg)) {
        REFUSE(SIEVE_UNSAFE_INDIRECT_BRANCH);
    } else {
        mark(s, prev[nprev - 1], 0); mark(s, at, 0);
        if (f->facts & SIEVE_F_CALL) call_alignment(s, at + (size_t)i->length, i, at);
    }
}

/* A string instruction: only in NaCl's sequences, each of %rsi and %rdi it uses set up by the two instructions before
   it (mov %esi,%esi; lea (%r15,%rsi),%rsi), which no jump may land between. */
/*@ requires checkable(s, i, f) && 0 <= nprev <= SIEVE_MAX_BUNDLE && \valid_read(prev + (0 .. nprev));
    assigns s->count, s->valid[0 .. s->size / 8]; */
static void string_sequence(pass_t *s, const insn_t *i, const struct sieve_form *f, size_t at, const size_t *prev, int nprev) {
    unsigned facts = f->facts; uint8_t pc[4] = {0};   /* pc: an earlier instruction's first bytes */
    int need = ((facts & SIEVE_F_RSI) ? 2 : 0) + ((facts & SIEVE_F_RDI) ? 2 : 0), ok = nprev >= need, q, step = 0;
    /*@ loop invariant 0 <= step <= 4; loop assigns step, ok, q, pc[0 .. 3]; loop variant need - step; */
    for (; ok && step < need; step++) {   /* q: the step-th of the need instructions before this one */
        int rdi = (facts & SIEVE_F_RSI) ? step >= 2 : 1, lea = step % 2, pl;
        if ((q = nprev - need + step) < 0 || q >= nprev) break;   /* never: nprev >= need (the bound for the proof) */
        earlier(s, prev[q], pc); pl = (int)(prev[q + 1] - prev[q]);
        ok = lea ? (pl == 4 && same(pc, rdi ? "\x49\x8D\x3C\x3F" : "\x49\x8D\x34\x37", 4)) : is_mov_self(pc, pl, rdi ? 0xFF : 0xF6);
    }
    if (!ok || step < need) REFUSE(SIEVE_STRING_OUTSIDE_SEQUENCE);
    else {
        /*@ loop invariant 1 <= step <= 4; loop assigns step, q, s->valid[0 .. s->size / 8]; loop variant need - step; */
        for (step = 1; step < need; step++) if ((q = nprev - need + step) >= 0 && q < nprev) mark(s, prev[q], 0);
        mark(s, at, 0);
    }
}

/* How many of the sandbox's prefix rules i breaks (each one finding): FS or GS; 67 on memory; a legacy prefix with no
   effect NaCl knows (one the instruction ignores, F2/F3 as hints: BND, XACQUIRE, XRELEASE; 66 on a near branch whose
   REX.W fixes the size anyway; 66 on a NOP with memory but in NaCl's padding NOPs, nops.def); on a string instruction,
   a prefix NaCl's string sequences do not take: a REX but a REX.W that sizes it (Reptar: a REX REP MOVSB ignores
   corrupts Intel front ends), F2 but on CMPS and SCAS. */
/*@ requires \valid_read(t) && \valid_read(i) && \valid_read(f) && i->form < t->form_count && \valid_read(t->forms + i->form);
    requires 0 <= i->length <= 15 && i->prefix_count <= 15;
    assigns \nothing; */
static int forbidden_prefixes(const struct sieve_tables *t, const insn_t *i, const struct sieve_form *f) {
    const uint8_t *c = i->bytes;
    int legacy = (i->prefixes & ~(unsigned)(P_REX | P_IGNREX)) && !nacl_nop(c, i->length) &&
        (has_redundant_prefix(t, i, 1) || ((i->prefixes & (P_REP | P_REPNE)) && !(f->prefix_use & PU_REPEATS)) ||
         ((i->prefixes & P_66) && (f->prefix_use & PU_BRANCH66) && (i->rex & 8)) ||
         ((i->prefixes & P_66) && (f->classes & C_NOP) && i->mem && !nacl_nopw(c, i->length)));
    return ((i->prefixes & (P_FS | P_GS)) != 0) + ((i->prefixes & P_67) && (i->mem || f->implicit_memory)) + legacy +
        (!i->has_modrm && (f->facts & (SIEVE_F_RSI | SIEVE_F_RDI)) && ((i->rex && (i->rex != 0x48 || !rex_bit_used(i, f, 0x48))) ||
                                                                     ((i->prefixes & P_REPNE) && (i->opcode & 0xF6) != 0xA6)));
}

/* check's first part: the policy (-2 when it refuses the instruction: nothing more to check), the prefixes the sandbox
   forbids, and the registers written, which restrict one register (returned; -1 none) or re-base the stack. */
/*@ SIEVE_WP(requires \valid(s) && tables_ok(s->t) && \valid_read(i) && \valid_read(f) && 0 <= i->form < s->t->form_count;
    requires 1 <= i->length <= 15 && i->prefix_count <= 15 && i->vr <= 3 && i->vx <= 1 && i->vb <= 1 && i->vvvv <= 31;
    requires \valid(s->valid + (0 .. s->size / 8)) && \separated(s, i) && \separated(s->valid + (0 .. s->size / 8), s, i);)
    assigns s->count, s->valid[0 .. s->size / 8];
    ensures -2 <= \result <= 31; */
static int policy_and_registers(pass_t *s, const insn_t *i, const struct sieve_form *f, size_t at, int pending) {
    int sp = i->rex ? special(i->bytes, i->length) : 0, n;
    if ((i->refused || f->decision || f->conditional_count) && !policy_check(s, i, at)) return -2;
    if (f->forbidden) emit_forbidden(s, at, i->length, i->form);
    /*@ loop assigns n, s->count; loop variant n; */
    for (n = forbidden_prefixes(s->t, i, f); n > 0; n--) REFUSE(SIEVE_SANDBOX_FORBIDDEN);
    if (sp >= 2) {   /* the re-basing of %rsp (2) or %rbp (3); 1: a stack move (mov between %rsp and %rbp, and $-n,%rsp) */
        if (pending != (sp == 2 ? 4 : 5)) REFUSE(SIEVE_STACK_POINTER_WRITE);
        mark(s, at, 0); return -1;
    }
    if (pending == 4 || pending == 5) REFUSE(SIEVE_STACK_POINTER_WRITE);
    return sp == 1 ? -1 : register_writes(s, i, f, at);
}
#undef REFUSE

/* One instruction under the model; returns the register it restricts (-1 none). prev: the starts of the bundle's
   instructions before it (nprev of them) and its own (prev[nprev] == at), so that one's length is the next's start minus its own. */
/*@ SIEVE_WP(requires \valid(s) && tables_ok(s->t) && \valid_read(i) && 0 <= i->form < s->t->form_count;
    requires 1 <= i->length <= 15 && i->prefix_count <= 15 && i->vr <= 3 && i->vx <= 1 && i->vb <= 1 && i->vvvv <= 31;
    requires \valid(s->valid + (0 .. s->size / 8)) && \valid_read(s->code + (0 .. s->size - 1));
    requires \separated(s, i) && \separated(s->valid + (0 .. s->size / 8), s, i);
    requires 0 <= nprev <= SIEVE_MAX_BUNDLE && \valid_read(prev + (0 .. nprev));)
    assigns s->count, s->valid[0 .. s->size / 8];
    ensures -1 <= \result <= 31; */
static int check(pass_t *s, const insn_t *i, size_t at, int pending, const size_t *prev, int nprev) {
    const struct sieve_form *f = &s->t->forms[i->form];
    int restricts = policy_and_registers(s, i, f, at, pending);
    if (restricts < -1) return -1;
    memory_operand(s, i, f, at, pending);
    if (f->facts & SIEVE_F_INDIRECT) indirect_branch(s, i, f, at, prev, nprev);
    if ((f->facts & SIEVE_F_DIRECT) && i->imm_size && (f->facts & SIEVE_F_CALL)) call_alignment(s, at + (size_t)i->length, i, at);
    if (f->facts & (SIEVE_F_RSI | SIEVE_F_RDI)) string_sequence(s, i, f, at, prev, nprev);
    return restricts;
}

/* The fast path: the common instruction, with at least 32 bytes of code left (reads stay within them): at most a 66, an
   F2 or F3 and a REX prefix (or NaCl's padding NOP), the one-byte or 0F map, an opcode and ModRM class whose every
   instance the decoder and the policy take outright and the model needs only register writes, memory operand, branch
   target or masked jump for (sieve_tables.fast, enum sieve_fast_bits), all of them fine. The length depends on one table
   per byte read; the checks are off that chain. The table comes in as a local (fast_t): a byte store to the jump-target
   maps may alias anything else. Its parts are SIEVE_INLINE: one loop for the compilers, three contracts for WP. */
typedef struct { const uint32_t *fast; uint8_t *valid; size_t size; uint64_t base, lo, hi, mask; int bad_target; } fast_t;
typedef struct { unsigned i, rex, e, m, d; } fast_insn_t;   /* the opcode's offset, the REX, its fast_entries, fast_modrm, descriptor */

#define NO_REGISTER 16u   /* restricted: none */
#define F(section, k) fast[SIEVE_FAST_##section + (k)]   /* fast_entries[k], ... */
/* The register an instruction restricts, from its fast_modrm entry m and descriptor d (NO_REGISTER: none). */
#define RESTRICTED(m, d) ((((m) >> ((d) >> 10) % 32) & ((d) >> 15) % 32) | ((d) >> 20) % 32)   /* (% for WP: & with 31) */

/* The 8 bytes at p, little-endian (one load, for the compilers; bytes, for WP). */
/*@ requires \valid_read(p + (0 .. 7));
    assigns \nothing; */
static SIEVE_INLINE uint64_t load8(const uint8_t *p) {
    return (uint64_t)p[0] | (uint64_t)p[1] << 8 | (uint64_t)p[2] << 16 | (uint64_t)p[3] << 24 | (uint64_t)p[4] << 32 |
           (uint64_t)p[5] << 40 | (uint64_t)p[6] << 48 | (uint64_t)p[7] << 56;
}

/* The length of the instruction at c for the fast path, its fields into *r (a padding NOP it does not take: d 0, m's ONES). */
/*@ requires fast_rows(fast) && \valid_read(c + (0 .. 30)) && \valid(r) && \separated(r, fast + (0 .. SIEVE_FAST_MODRM - 1));
    assigns *r;
    ensures \result <= 26;
    ensures r->i <= 4; */
static SIEVE_INLINE size_t fast_decode(const uint32_t *fast, const uint8_t *c, fast_insn_t *r) {
    unsigned i = 0, rex = 0, b = c[0], o16 = b == 0x66, E = SIEVE_FAST_ENTRIES, M = SIEVE_FAST_MODRM, e, m;   /* E, M: contexts */
    if (o16 && (c[1] == 0x66 || c[1] == 0x2E)) {   /* NaCl's padding NOP 66{1,6} 2E 0F 1F 84 00 00 00 00 00 */
        uint64_t w = load8(c + 1) ^ 0x6666666666666666u;   /* w: c[1..8]; i: the 66s it starts with (c[0]: one more) */
        i = !(w & 0xFF) + !(w & 0xFFFF) + !(w & 0xFFFFFF) + !(w & 0xFFFFFFFF) + !(w & 0xFFFFFFFFFF);
        /*@ assert i <= 5; */
        r->i = r->rex = r->e = r->m = 0; r->d = SIEVE_FD_TAKE | NO_REGISTER << 20;   /* then 2E 0F 1F 84 00 00 00 00, and 00 */
        if (load8(c + i + 1) != 0x841F0F2Eu || c[i + 9] || !(F(DESCS, (F(ENTRIES, 0x31F) >> 16) + 1) & SIEVE_FD_NOP66)) r->m = SIEVE_FM_ONES, r->d = 0;
        return 10 + i;
    }   /* the context is a choice of table (E), not arithmetic on the length's chain */
    if (o16) { b = c[++i]; E += 512; }
    if (b == 0xF2) { b = c[++i]; E += 2048; } else if (b == 0xF3) { b = c[++i]; E += 4096; }
    if ((b & 0xF0) == 0x40) { rex = b; b = c[++i]; E += 12 * 512 + rex / 8 % 2 * 1024; M += rex % 2 * 256 + rex / 4 % 2 * 1024; }   /* W; B, R */
    /*@ assert E <= 12 * 512 + 1024 + 4096 + 512 && M <= SIEVE_FAST_MODRM + 1280; */
    if (b == 0x0F) { b = c[++i]; E += 256; }   /* b: the opcode, in the one-byte or the 0F map */
    /*@ assert i <= 4 && E <= SIEVE_FAST_MODRM - 256 && M <= SIEVE_FAST_SIB - 256; */
    e = fast[E + b]; m = fast[M + c[i + 1]]; r->i = i; r->rex = rex; r->e = e; r->m = m; r->d = F(DESCS, (e >> 16) + (m >> 11) % 32);
    /*@ assert 0 <= (m & e >> 4); */   /* (facts the provers need spelled out, one per assertion) */
    /*@ assert 0 <= e % 16 <= 15; */
    return (size_t)i + e % 16 + (m & e >> 4) % 8;   /* (% for WP: & with 15, 7) */
}

/* The closer look at a special instruction for fast_checks: a NOP with a prefix, a call, a masked or a direct jump. */
/*@ SIEVE_WP(requires \valid_read(x) && \valid(x->valid + (0 .. 3 * (x->size / 8) + 2)) && \valid(bad_target) && \valid_read(f);
    requires \valid_read(code + (0 .. x->size - 1)) && at + 31 <= x->size <= 0x3fffffffffffffff && length <= 26 && f->i <= 4;
    requires n <= SIEVE_MAX_BUNDLE && \valid_read(prev + (0 .. SIEVE_MAX_BUNDLE)) && 0 <= mark <= 1;
    requires \separated(x->valid + (0 .. 3 * (x->size / 8) + 2), code + (0 .. x->size - 1), x, bad_target, f, prev + (0 .. SIEVE_MAX_BUNDLE));)
    assigns x->valid[0 .. 3 * (x->size / 8) + 2], *bad_target;
    SIEVE_WP(ensures -1 <= \result <= 1;) */
static SIEVE_INLINE int fast_branch(const fast_t *x, int *bad_target, const uint8_t *code, size_t at, size_t length, const fast_insn_t *f,
                                    const size_t *prev, size_t n, int mark) {
    const uint8_t *c = code + at; const uint32_t m = f->m, d = f->d;
    if ((d & SIEVE_FD_LOOK) && !nacl_nopw(c, (int)length)) return -1;   /* with a REX, or 66 and memory: check's */
    if ((d & SIEVE_FD_CALL) && ((x->base + at + length) & x->mask)) return -1;   /* a call must end its bundle */
    if (d & SIEVE_FD_INDIRECT) {   /* the two before it: p2, p1 (below it: for the proof) */
        size_t p2 = n < 2 ? at : prev[n - 2], p1 = n < 2 ? at : prev[n - 1];
        if (p1 >= at || p2 >= p1 || !is_add_r15(code + p1, (int)(at - p1), (int)((m >> 20) % 16)) ||
            !is_mask(code + p2, (int)(p1 - p2), (int)((m >> 20) % 16), (uint32_t)x->mask + 1)) return -1;
        x->valid[p1 / 8] &= (uint8_t)~(1u << p1 % 8); mark = 0;   /* no jump lands inside it */
    }
    if (d & SIEVE_FD_DIRECT) {
        int64_t target = jump_target(at, length, c + f->i + 1, length - f->i - 1);   /* the offset right after the opcode */
        x->valid[2 * (x->size / 8 + 1) + at / 8] |= (uint8_t)(1u << at % 8);   /* a direct branch starts here (report_jumps) */
        if (target >= 0 && (uint64_t)target < x->size) x->valid[x->size / 8 + 1 + (uint64_t)target / 8] |= (uint8_t)(1u << (uint64_t)target % 8);
        else if (!jump_lands(x->valid, x->size, x->base, x->lo, x->hi, x->mask, target)) *bad_target = 1;
    }
    return mark;
}

/* The closer look at the instruction f of length bytes at code[at] that the fast path decoded (dm: its descriptor's bits
   against its ModRM entry's): -1, the full path judges it; else whether a jump may land on it. Marks a direct branch's
   target (in the map after the valid ones, x->valid + x->size / 8 + 1), clears the masked jump's second instruction. */
/*@ SIEVE_WP(requires \valid_read(x) && fast_rows(x->fast) && \valid(x->valid + (0 .. 3 * (x->size / 8) + 2)) && \valid(bad_target) && \valid_read(f);
    requires \valid_read(code + (0 .. x->size - 1)) && at + 31 <= x->size <= 0x3fffffffffffffff && length <= 26 && f->i <= 4;
    requires n <= SIEVE_MAX_BUNDLE && \valid_read(prev + (0 .. SIEVE_MAX_BUNDLE)) && at < be;
    requires \separated(x->valid + (0 .. 3 * (x->size / 8) + 2), code + (0 .. x->size - 1), x, bad_target, f, prev + (0 .. SIEVE_MAX_BUNDLE));)
    assigns x->valid[0 .. 3 * (x->size / 8) + 2], *bad_target;
    SIEVE_WP(ensures -1 <= \result <= 1;
    ensures \result >= 0 && (dm & (SIEVE_FM_REG_STACK | SIEVE_FM_RM_STACK)) != 0 ==> length + 3 <= be - at;) */
static SIEVE_INLINE int fast_checks(const fast_t *x, int *bad_target, const uint8_t *code, size_t at, size_t length, size_t be,
                                    const fast_insn_t *f, uint32_t dm, uint32_t pm, uint32_t pd, const size_t *prev, size_t n) {
    const uint8_t *c = code + at; const uint32_t *fast = x->fast, m = f->m, d = f->d; int mark = 1;
    if (dm & SIEVE_FM_CHECK) {   /* a memory operand: based on %rsp, %rbp or %r15, indexed by the register restricted */
        if (m & SIEVE_FM_SIB) {
            unsigned sib = F(SIB, m / SIEVE_FM_NO_BASE5 % 2 * 1024 + f->rex % 4 * 256 + c[f->i + 2]), index = sib & 31;
            if ((sib & SIEVE_FS_BAD_BASE) || (index != NO_REGISTER && index != RESTRICTED(pm, pd))) return -1;
            mark = index == NO_REGISTER;   /* a jump may not land between the restriction and its use */
        } else if (m & SIEVE_FM_BAD_BASE) return -1;
    }
    /* not taken; a SIB with no base (a disp32 follows: the length above does not count it); no write to %rsp, %rbp,
       %r15 (check's) but as NaCl's re-basing, the register restricted %esp or %ebp and add %r15,%rsp (or %rbp) next */
    if ((dm & (SIEVE_FD_TAKE | SIEVE_FM_NO_BASE5 | SIEVE_FM_WRITES)) &&
        (!(d & SIEVE_FD_TAKE) || (dm & SIEVE_FM_WRITES) || ((f->e & SIEVE_FE_MODRM) && (c[f->i + 2] & 7) == 5))) return -1;
    if ((dm & (SIEVE_FM_REG_STACK | SIEVE_FM_RM_STACK)) && (length + 3 > be - at || !(F(DESCS, (F(ENTRIES, 12 << 9 | 0x401) >> 16) + 14) & SIEVE_FD_TAKE) ||
                                                                !same(c + length, RESTRICTED(m, d) == 4 ? "\x4c\x01\xfc" : "\x4c\x01\xfd", 3))) return -1;
    return d & SIEVE_FD_SPECIAL ? fast_branch(x, bad_target, code, at, length, f, prev, n, mark) : mark;
}

/* From at, an instruction start in the bundle ending at *bundle_end, while the fast path takes instructions that start
   before end: across bundles (their instructions added to *count, the restriction dropped at their ends). Leaves in prev
   the starts of the current bundle's instructions (*nprev of them), in *restricted the register the
   last restricts (-1: none). Returns where it stopped: there the full path judges one instruction. */
/*@ SIEVE_WP(requires \valid(xp) && fast_rows(xp->fast) && \valid(bundle_end) && \valid(restricted) && \valid(nprev) && \valid(count);
    requires \valid(prev + (0 .. SIEVE_MAX_BUNDLE)) && \valid(xp->valid + (0 .. 3 * (xp->size / 8) + 2));
    requires \valid_read(code + (0 .. xp->size - 1)) && at <= end && end + 31 <= xp->size <= 0x3fffffffffffffff && xp->mask < 0x3fffffffffffffff;
    requires at < *bundle_end <= xp->size && 0 <= *nprev <= SIEVE_MAX_BUNDLE;
    requires \separated(code + (0 .. xp->size - 1), xp->valid + (0 .. 3 * (xp->size / 8) + 2), xp, bundle_end, restricted, nprev, count, prev + (0 .. SIEVE_MAX_BUNDLE));
    requires \separated(xp->valid + (0 .. 3 * (xp->size / 8) + 2), xp, bundle_end, restricted, nprev, count, prev + (0 .. SIEVE_MAX_BUNDLE));
    requires \separated(xp, bundle_end, restricted, nprev, count, prev + (0 .. SIEVE_MAX_BUNDLE));
    requires \separated(bundle_end, restricted, nprev, count, prev + (0 .. SIEVE_MAX_BUNDLE));)
    assigns xp->valid[0 .. 3 * (xp->size / 8) + 2], xp->bad_target, *bundle_end, *restricted, prev[0 .. SIEVE_MAX_BUNDLE], *nprev, *count;
    SIEVE_WP(ensures \old(at) <= \result < \old(end) + 30;
    ensures \result < *bundle_end;
    ensures 0 <= *nprev <= SIEVE_MAX_BUNDLE;) */
static SIEVE_NOINLINE size_t fast_run(fast_t *xp, const uint8_t *code, size_t at, size_t end, size_t *bundle_end, int *restricted,
                                      size_t *prev, int *nprev, size_t *count) {
    const fast_t x = *xp;   /* a copy no store to the maps can alias */
    size_t be = *bundle_end, n = (size_t)*nprev, length; fast_insn_t f; int mark;
    uint32_t pm = 0, pd = (uint32_t)(*restricted < 0 || *restricted > 15 ? NO_REGISTER : (unsigned)*restricted) << 20, dm, add, r;
    if (*restricted == 4 || *restricted == 5) end = at;   /* after a write to %esp or %ebp: the re-basing's second half, check's */
    /*@ SIEVE_WP(loop invariant x.mask < 0x3fffffffffffffff && end + 31 <= x.size <= 0x3fffffffffffffff;
        loop invariant \at(at, Pre) <= at < end + 30;
        loop invariant at < be <= x.size + x.mask + 1;
        loop invariant 0 <= n <= SIEVE_MAX_BUNDLE;)
        loop assigns at, be, n, length, mark, pm, pd, dm, add, f, xp->valid[0 .. 3 * (xp->size / 8) + 2], xp->bad_target, prev[0 .. SIEVE_MAX_BUNDLE], *count;
        loop variant (end - at) * (SIEVE_MAX_BUNDLE + 1) + SIEVE_MAX_BUNDLE - n; */   /* (a 0 length, which no table has: n ends it) */
    while (at < end && n < SIEVE_MAX_BUNDLE - 1) {   /* (it takes up to two: room for both) */
        if ((length = fast_decode(x.fast, code + at, &f)) > be - at) break;   /* in the bundle */
        dm = ((f.d ^ SIEVE_FD_TAKE) | SIEVE_FM_NO_BASE5) & f.m &   /* what to look at (m: SIEVE_FM_ONES) */
             (SIEVE_FM_ONES | SIEVE_FM_NO_BASE5 | SIEVE_FM_WRITES | SIEVE_FM_CHECK | SIEVE_FM_REG_STACK | SIEVE_FM_RM_STACK);
        if (!dm) mark = 1, add = 0;
        else if ((mark = fast_checks(&x, &xp->bad_target, code, at, length, be, &f, dm, pm, pd, prev, n)) < 0) break;
        else add = dm & (SIEVE_FM_REG_STACK | SIEVE_FM_RM_STACK);   /* NaCl's re-basing: add %r15,%rsp (or %rbp) next */
        x.valid[at / 8] |= (uint8_t)((unsigned)mark << at % 8);   /* a new instruction start: its bit is still clear */
        prev[n++] = at; pm = f.m; pd = f.d; at += length;
        if (add) { prev[n++] = at; at += 3; pd = NO_REGISTER << 20; }   /* the add */
        if (at == be) { *count += n; n = 0; pd = NO_REGISTER << 20; be += x.mask + 1; }
    }
    r = RESTRICTED(pm, pd); *restricted = r < NO_REGISTER ? (int)r : -1; *nprev = (int)n; *bundle_end = be; return at;
}

/* Whether the direct branch at s->code[at] (31 bytes of code from it) is one the fast path takes (the fast decoder: as
   in the pass) and lands. */
/*@ requires \valid_read(s) && \valid_read(s->t) && (fast == \null || fast_rows(fast)) && s->size <= 0x3fffffffffffffff;
    requires \valid_read(s->code + (0 .. s->size - 1)) && \valid_read(s->valid + (0 .. s->size / 8)) SIEVE_WP(&& at + 31 <= s->size);
    assigns \nothing; */
static SIEVE_INLINE int fast_lands(const pass_t *s, const uint32_t *fast, size_t at) {
    fast_insn_t f = {0, 0, 0, 0, 0}; const size_t n = !fast ? 0 : fast_decode(fast, s->code + at, &f);
    return n && (f.d & (SIEVE_FD_TAKE | SIEVE_FD_DIRECT)) == (SIEVE_FD_TAKE | SIEVE_FD_DIRECT) &&
           jump_lands(s->valid, s->size, s->base, s->lo, s->hi, s->t->bundle_size - 1, jump_target(at, n, s->code + at + f.i + 1, n - f.i - 1));
}

/* Reports the direct branches that may not land where they do, in the order of the code, once the pass has found that
   one exists: the pass marks where each direct branch it judged starts (the third map), and only those are looked at
   again (a second walk that decoded every instruction cost code with a bad jump ten times the pass), by the fast
   decoder where it can (the full one costs ten times as much), by the full one where a jump misses (for its form). */
/*@ requires \valid(s) && tables_ok(s->t) && s->size <= 0x3fffffffffffffff && (fast == \null || fast_rows(fast));
    requires \valid_read(s->code + (0 .. s->size - 1)) && \valid_read(s->valid + (0 .. 3 * (s->size / 8) + 2));
    assigns s->count; */
static void report_jumps(pass_t *s, const uint32_t *fast) {   /* (fast: the fast path's table, or none) */
    const uint64_t mask = s->t->bundle_size - 1; const uint8_t *branches = s->valid + 2 * (s->size / 8 + 1); size_t at; unsigned b; insn_t i;
    /*@ loop assigns at, b, i, s->count; loop variant s->size - at; */
    for (at = 0; at < s->size; at++) {   /* (the next branch in 8 bytes: its bit's index, the low bits of b that are clear) */
        if (at % 64 == 0 && at / 8 + 8 <= s->size / 8 + 1 && !load8(branches + at / 8)) at += 63;   /* no branch in these 64 bytes */
        else if (!(b = branches[at / 8] >> at % 8)) at += 7 - at % 8;   /* none in the rest of these 8 */
        else if ((at += !(b % 2) + !(b % 4) + !(b % 8) + !(b % 16) + !(b % 32) + !(b % 64) + !(b % 128)) < s->size && (at + 31 > s->size || !fast_lands(s, fast, at)) &&
                 decode(s->t, s->code, at, s->size, &i) && (s->t->forms[i.form].facts & SIEVE_F_DIRECT) && i.imm_size && !i.refused &&
                 !jump_lands(s->valid, s->size, s->base, s->lo, s->hi, mask, jump_target(at, (size_t)i.length, i.bytes + i.imm_off, i.imm_size)))
            emit(s, SIEVE_BAD_JUMP_TARGET, at, i.length, i.form, -1, 0);
    }
}

/* The sandbox pass over s's code, with three maps of size / 8 + 1 bytes, all clear: s->valid, s->targets right after it,
   and the direct branches' starts after that. Returns whether a direct branch may not land (report_jumps finds which). */
/*@ SIEVE_WP(requires \valid(s) && tables_ok(s->t) && s->size <= 0x3fffffffffffffff;
    requires \valid_read(s->code + (0 .. s->size - 1)) && \valid(s->valid + (0 .. 3 * (s->size / 8) + 2));
    requires s->targets == s->valid + s->size / 8 + 1 && \separated(s, s->valid + (0 .. 3 * (s->size / 8) + 2));
    requires (s->t->full_path_only || fast_rows(s->t->fast)) && \separated(s->code + (0 .. s->size - 1), s, s->valid + (0 .. 3 * (s->size / 8) + 2));)
    assigns s->count, s->instructions, s->valid[0 .. 3 * (s->size / 8) + 2]; */
static int sandbox_pass(pass_t *s) {
    const struct sieve_tables *t = s->t; const uint8_t *code = s->code;
    const uint64_t base = s->base, bundle_mask = t->bundle_size - 1;
    /* the fast path reads 32 bytes ahead; it needs the bundles aligned (else the layout is refused) */
    const size_t size = s->size, fast_end = t->full_path_only || size < 32 || (base & bundle_mask) ? 0 : size - 31;
    size_t at = 0, k, prev[SIEVE_MAX_BUNDLE + 1] = {0}, bundle_end = t->bundle_size - (size_t)(base % t->bundle_size);
    int nprev = 0, restricted = -1; uint8_t any = 0; insn_t i; fast_t x;
    x.fast = t->fast; x.valid = s->valid; x.size = size; x.base = base; x.lo = s->lo; x.hi = s->hi; x.mask = bundle_mask; x.bad_target = 0;
    if (base & bundle_mask) emit(s, SIEVE_LAYOUT, 0, 0, -1, -1, 0);
    if (bundle_end > size) bundle_end = size;
    /*@ SIEVE_WP(loop invariant 0 <= nprev <= SIEVE_MAX_BUNDLE;
        loop invariant at <= size && bundle_end <= size;
        loop invariant at < size ==> at < bundle_end;
        loop invariant x.valid == s->valid && x.size == size && x.mask == bundle_mask;)
        loop assigns at, nprev, restricted, bundle_end, i, x.bad_target, prev[0 .. SIEVE_MAX_BUNDLE], s->count, s->instructions,
                     s->valid[0 .. 3 * (s->size / 8) + 2];
        loop variant size - at; */
    while (at < size) {
        if (at < fast_end) {
            at = fast_run(&x, code, at, fast_end, &bundle_end, &restricted, prev, &nprev, &s->instructions);
            if (bundle_end > size) bundle_end = size;
        }
        if (at < bundle_end && nprev < SIEVE_MAX_BUNDLE) {   /* the full path, one instruction (a bundle has at most SIEVE_MAX_BUNDLE) */
            prev[nprev] = at;
            if (!decode(t, code, at, size, &i)) { emit(s, SIEVE_INVALID, at, 1, -1, -1, 0); at = bundle_end; }
            else if (at + (size_t)i.length > bundle_end) { emit(s, SIEVE_BUNDLE_CROSSING, at, i.length, i.form, -1, 0); at = bundle_end; }
            else {
                mark(s, at, 1);
                if ((t->forms[i.form].facts & SIEVE_F_DIRECT) && i.imm_size && !i.refused) {
                    int64_t target = jump_target(at, (size_t)i.length, i.bytes + i.imm_off, i.imm_size);
                    s->valid[2 * (size / 8 + 1) + at / 8] |= (uint8_t)(1u << at % 8);   /* a direct branch starts here */
                    if (target >= 0 && (uint64_t)target < size) s->targets[(uint64_t)target / 8] |= (uint8_t)(1u << (uint64_t)target % 8);
                    else x.bad_target |= !jump_lands(s->valid, size, base, s->lo, s->hi, bundle_mask, target);
                }
                restricted = i.refused ? (policy_check(s, &i, at), -1) : check(s, &i, at, restricted, prev, nprev);
                at += (size_t)i.length; prev[++nprev] = at;
            }
        } else at = bundle_end;
        if (at >= bundle_end) {   /* the bundle's end */
            s->instructions += (size_t)nprev;
            if ((restricted == 4 || restricted == 5) && nprev)
                emit(s, SIEVE_STACK_POINTER_WRITE, prev[nprev - 1], (int)(prev[nprev] - prev[nprev - 1]), -1, -1, 0);
            nprev = 0; restricted = -1; bundle_end = at + t->bundle_size - (size_t)((base + at) % t->bundle_size); if (bundle_end > size) bundle_end = size;   /* (%: for WP) */
        }
    }
    /*@ SIEVE_WP(loop invariant 0 <= k <= size / 8 + 1;) loop assigns k, any; loop variant size / 8 + 1 - k; */
    for (k = 0; k <= size / 8; k++) any |= s->targets[k] & (uint8_t)~s->valid[k];
    return any || x.bad_target;
}

/* The policy and the decoder alone (model none): every instruction against the policy, past an invalid byte to the next. */
/*@ SIEVE_WP(requires \valid(s) && tables_ok(s->t) && s->size <= 0x3fffffffffffffff && \valid_read(s->code + (0 .. s->size - 1));
    requires \separated(s->code + (0 .. s->size - 1), s);)
    assigns s->count, s->instructions; */
static void policy_pass(pass_t *s) {
    size_t at = 0; insn_t i;
    /*@ loop assigns at, i, s->count, s->instructions; loop variant s->size - at; */
    while (at < s->size) {
        if (!decode(s->t, s->code, at, s->size, &i)) { emit(s, SIEVE_INVALID, at, 1, -1, -1, 0); at++; continue; }
        policy_check(s, &i, at); at += (size_t)i.length; s->instructions++;
    }
}

/*@ SIEVE_WP(requires tables_ok(t) && (t->full_path_only || fast_rows(t->fast)) && (place == \null || \valid_read(place));
    requires size <= 0x3fffffffffffffff && \valid_read(code + (0 .. size - 1));
    requires place == \null || place->targets == \null || (\valid(place->targets + (0 .. size / 8)) && \separated(place->targets + (0 .. size / 8), place));
    requires maps == \null || (\valid(maps + (0 .. 3 * (size / 8) + 2)) && \separated(maps + (0 .. 3 * (size / 8) + 2), code + (0 .. size - 1)));
    requires maps == \null || place == \null || place->targets == \null || \separated(maps + (0 .. 3 * (size / 8) + 2), place->targets + (0 .. size / 8), place);
    requires maps == \null || \separated(maps + (0 .. 3 * (size / 8) + 2), t);
    requires place == \null || place->look == \null || (\valid(place->look) && \separated(place->look, place, maps + (0 .. 3 * (size / 8) + 2)));
    requires instructions == \null || \valid(instructions);)
    assigns *instructions, place->targets[0 .. size / 8], *place->look, maps[0 .. 3 * (size / 8) + 2]; */
SIEVE_CORE_API size_t sieve_core_run_maps(const struct sieve_tables *t, const uint8_t *code, size_t size, uint64_t base, const struct sieve_place *place,
                                          sieve_report_fn report, void *ctx, size_t *instructions, uint8_t *maps) {
    pass_t s; size_t k; int look;
    s.t = t; s.code = code; s.instructions = 0; s.size = size; s.base = base; s.report = report; s.ctx = ctx; s.count = 0;
    s.lo = place ? place->lo : 0; s.hi = place ? place->hi : ~(uint64_t)0;
    if (t->model_none) policy_pass(&s);
    else if (!maps) emit(&s, SIEVE_INVALID, 0, 0, -1, -1, 0);   /* (sieve_core_run: the allocation failed) */
    else {
        s.valid = maps; s.targets = maps + size / 8 + 1; look = sandbox_pass(&s);   /* (the look here, where WP carries fast_rows) */
        if (place && place->look) *place->look = look; else if (look) report_jumps(&s, t->full_path_only ? 0 : t->fast);
        /*@ SIEVE_WP(loop invariant 0 <= k <= size / 8 + 1;) loop assigns k, place->targets[0 .. size / 8]; loop variant size / 8 + 1 - k; */
        for (k = 0; place && place->targets && k <= size / 8; k++) place->targets[k] = maps[k];   /* (a loop WP proves, not memcpy) */
    }
    if (instructions) *instructions = s.instructions;
    return s.count;
}

SIEVE_CORE_API size_t sieve_core_run(const struct sieve_tables *t, const uint8_t *code, size_t size, uint64_t base,
                                     const struct sieve_place *place, sieve_report_fn report, void *ctx, size_t *instructions) {
    /* below 1 KiB of code, one size to allocate (EVA's harness: one allocation for every size) */
    uint8_t *maps = t->model_none ? NULL : (uint8_t *)calloc((size < 1024 ? 1024 : size) / 8 + 1, 3);
    size_t count = sieve_core_run_maps(t, code, size, base, place, report, ctx, instructions, maps);
    free(maps); return count;
}

/* The bad jumps alone, over the maps of a sandbox pass over the code (sieve_core_run_maps's with place->look), as that
   pass reports them after its findings, a jump out of the code landing on a bundle start in [lo, hi]. */
/*@ SIEVE_WP(requires tables_ok(t) && (t->full_path_only || fast_rows(t->fast)) && size <= 0x3fffffffffffffff;
    requires \valid_read(code + (0 .. size - 1)) && \valid_read(maps + (0 .. 3 * (size / 8) + 2));)
    assigns \nothing; */
SIEVE_CORE_API size_t sieve_core_report_jumps(const struct sieve_tables *t, const uint8_t *code, size_t size, uint64_t base, const uint8_t *maps,
                                              uint64_t lo, uint64_t hi, sieve_report_fn report, void *ctx) {
    pass_t s = {0}; s.t = t; s.code = code; s.size = size; s.base = base; s.lo = lo; s.hi = hi; s.report = report; s.ctx = ctx;
    s.valid = (uint8_t *)maps; report_jumps(&s, t->full_path_only ? 0 : t->fast); return s.count;   /* (report_jumps only reads the maps) */
}

/* The decoder alone (dyncode.c and the tests' decoder differential); the generated verifier uses it for patching. */
/*@ SIEVE_WP(requires tables_ok(t) && size <= 0x3fffffffffffffff && \valid_read(code + (0 .. size - 1)) && \valid(l);)
    assigns *l; */
SIEVE_CORE_API int sieve_core_decode(const struct sieve_tables *t, const uint8_t *code, size_t size, sieve_layout *l) {
    insn_t i; int vec, end; *l = (sieve_layout){0}; l->form = -1;
    if (!decode(t, code, 0, size, &i)) return 0;
    vec = i.table >= 5; end = i.has_modrm ? i.modrm_at : i.imm_off;   /* the opcode byte is just before */
    l->length = i.length; l->form = i.form; l->refused = i.refused; l->prefixes = i.prefix_count; l->imm_at = i.imm_off;
    l->imm_size = i.imm_size; l->memory = i.mem; l->encoding = i.table == 4 ? 4 : !vec ? 0 : i.table <= 7 ? 1 : i.table <= 12 ? 2 : 3;
    l->map = !vec ? (i.table == 4 ? 1 : i.table) : i.table <= 7 ? i.table - 4 : i.table <= 12 ? (i.table <= 10 ? i.table - 7 : i.table - 6) : i.table - 5;
    l->opcode_at = (uint8_t)(i.table == 4 ? i.length - 1 : end - 1); l->modrm_at = i.has_modrm ? i.modrm_at : 0;
    if (i.mem) {
        l->disp_at = (uint8_t)(i.modrm_at + 1 + ((i.modrm & 7) == 4)); l->disp_size = (uint8_t)(i.imm_off - l->disp_at);
        l->rip_relative = (i.modrm & 0xC7) == 5; l->index = (i.modrm & 7) == 4 && (((i.sib >> 3) & 7) | i.vx << 3) != 4;
    }
    l->disp_at = l->disp_size ? l->disp_at : 0; l->imm_at = l->imm_size ? l->imm_at : 0;   /* absent fields at 0 */
    return i.length;
}
