/*
 * Dynamic code (DESIGN §9), after NaCl's dyncode interface (dfa_validate_64.c, dfa_validate_common.c):
 * regions verified as they turn executable, replacements of verified code, a copy into live code that
 * never lets a running thread execute a partly written instruction, and patching of refused instructions
 * into same-length replacements; and one module verified in pieces on several threads. Built on the core's
 * sieve_core_run and sieve_core_decode alone: the sandbox rules stay in core.c, and every verdict here is the
 * core's on the code as it will run.
 */
#include "sieve_core.h"

#include <stdlib.h>
#include <string.h>

#ifndef SIEVE_CORE_API
#define SIEVE_CORE_API
#endif

#define HLT 0xF4
#define NOP 0x90

/* Reports a finding that is not one instruction's (length 0 at offset 0: the region as a whole). Returns 1. */
static size_t report_one(sieve_report_fn report, void *ctx, int kind, size_t offset, int length, int form) {
    sieve_finding f;
    f.offset = offset; f.length = (size_t)length; f.kind = kind; f.form = form; f.rule = -1; f.warning = 0; f.reason = -1;
    if (report) report(&f, ctx);
    return 1;
}

/* Copies the instruction at code[at] (size bytes of code) into b: its first bytes, 15 at most, all the decoder reads.
   Returns how many. (For EVA, whose intervals do not relate at + 15 to size: every read of an instruction's bytes is
   then in b, a buffer of INSN bytes, zeroed past them.) */
#define INSN 32
static size_t take(const uint8_t *code, size_t at, size_t size, uint8_t *b) {
    size_t k, p;
    for (k = 0, p = at; k < 15 && p < size; k++, p++) b[k] = code[p];
    return k;
}

#ifndef SIEVE_EMBEDDED
SIEVE_CORE_API size_t sieve_core_verify(const struct sieve_tables *t, const uint8_t *code, size_t size, uint64_t base,
                                        sieve_report_fn report, void *ctx) {
    return sieve_core_run(t, code, size, base, NULL, report, ctx, NULL);
}
#endif

SIEVE_CORE_API const char *sieve_core_kind_name(int kind) {
    static const char *const names[SIEVE_KIND_COUNT] = { SIEVE_KIND_NAMES };
    return kind >= 0 && kind < SIEVE_KIND_COUNT ? names[kind] : "?";
}

/* ---- regions: a module's code, verified a bundle-aligned piece at a time ------------------------ */

SIEVE_CORE_API int sieve_core_module_init(const struct sieve_tables *t, sieve_module *m, uint64_t base, uint64_t size,
                                          uint8_t *loaded) {
    uint64_t mask = t->bundle_size - 1;
    if (!m || !loaded || !size || (base & mask) || (size & mask) || base + (size - 1) < base) return 0;
    m->base = base; m->size = size; m->loaded = loaded;
    memset(loaded, 0, (size_t)((size / t->bundle_size + 7) / 8));
    return 1;
}

/* Whether [address, address + size) is whole bundles of the module, all loaded (loaded 1) or none (0). */
static int region_fits(const struct sieve_tables *t, const sieve_module *m, uint64_t address, size_t size, int loaded) {
    uint64_t mask = t->bundle_size - 1, first, k;
    if (!m || !m->loaded || !size || (address & mask) || (size & mask) || address < m->base ||
        address - m->base >= m->size || size > m->size - (address - m->base))
        return 0;
    first = (address - m->base) / t->bundle_size;
    /* (k below the module's bundles: the same as below the region's end, which EVA's intervals do not relate to m) */
    for (k = first; k < first + size / t->bundle_size && k < m->size / t->bundle_size; k++)
        if ((int)((m->loaded[k >> 3] >> (k & 7)) & 1) != loaded) return 0;
    return 1;
}

/* Direct jumps that leave a region land on a bundle start of its module (NaCl's rule for dynamic code):
   every bundle start of verified code is an instruction start, and unverified code never runs. */
static struct sieve_place module_place(const sieve_module *m, uint8_t *targets) {
    struct sieve_place p;
    p.lo = m->base; p.hi = m->base + (m->size - 1); p.targets = targets; p.look = NULL;
    return p;
}

SIEVE_CORE_API size_t sieve_core_verify_region(const struct sieve_tables *t, sieve_module *m, const uint8_t *code, size_t size,
                                               uint64_t address, sieve_report_fn report, void *ctx) {
    struct sieve_place place;
    uint64_t k, first;
    size_t count;
    if (!region_fits(t, m, address, size, 0)) return report_one(report, ctx, SIEVE_LAYOUT, 0, 0, -1);
    place = module_place(m, NULL);
    count = sieve_core_run(t, code, size, address, &place, report, ctx, NULL);
    if (count) return count;
    first = (address - m->base) / t->bundle_size;
    for (k = first; k < first + size / t->bundle_size && k < m->size / t->bundle_size; k++)   /* (the bound: as in region_fits) */
        m->loaded[k >> 3] |= (uint8_t)(1u << (k & 7));
    return 0;
}

/* ---- replacement: new code for verified code, at the same address ------------------------------ */

static int bit(const uint8_t *map, size_t at) { return (map[at >> 3] >> (at & 7)) & 1; }

/* Whether the instruction at `at` (length n, layouts a old and b new, its bytes old_bytes and new_bytes) may change: a
   form NaCl marks modifiable, the same form, only its displacement, immediate or branch offset bytes changed, and in no
   sanctioned sequence (a jump may land on it and on the instruction after it, in the old code and in the new). */
static int may_change(const struct sieve_tables *t, const sieve_layout *a, const sieve_layout *b, const uint8_t *old_bytes,
                      const uint8_t *new_bytes, size_t at, size_t size, const uint8_t *old_targets, const uint8_t *new_targets) {
    int k, n = a->length;
    if (a->form != b->form || a->form < 0 || !(t->forms[a->form].facts & SIEVE_F_MODIFIABLE)) return 0;
    for (k = 0; k < n; k++) {
        int in_disp = b->disp_size && k >= b->disp_at && k < b->disp_at + b->disp_size;
        int in_imm = b->imm_size && k >= b->imm_at && k < b->imm_at + b->imm_size;
        if (old_bytes[k] != new_bytes[k] && !in_disp && !in_imm) return 0;
    }
    if (!bit(old_targets, at) || !bit(new_targets, at)) return 0;
    return at + (size_t)n >= size || (bit(old_targets, at + (size_t)n) && bit(new_targets, at + (size_t)n));
}

SIEVE_CORE_API size_t sieve_core_validate_replacement(const struct sieve_tables *t, const sieve_module *m,
                                                      const uint8_t *old_code, const uint8_t *new_code, size_t size,
                                                      uint64_t address, sieve_report_fn report, void *ctx) {
    struct sieve_place place;
    uint8_t *old_targets, *new_targets, old_bytes[INSN] = {0}, new_bytes[INSN] = {0};
    size_t count = 0, at = 0, k, n = size / 8 + 1, maps = 3 * ((size < 1024 ? 1024 : size) / 8 + 1);
    if (!region_fits(t, m, address, size, 1)) return report_one(report, ctx, SIEVE_LAYOUT, 0, 0, -1);
    /* the core's maps (sieve_core_run_maps), whose first third is the jump-target map (rather than its copy into
       place->targets, a loop whose invariant EVA's intervals cannot check); zeroed: the core leaves them so under model
       none, which has no jump-target facts (every change is refused); below 1 KiB of code one size, as in sieve_core_run
       (EVA's harness: one allocation for every size) */
    old_targets = (uint8_t *)calloc(maps, 1); new_targets = (uint8_t *)calloc(maps, 1);
    if (!old_targets || !new_targets) {
        free(old_targets); free(new_targets);
        return report_one(report, ctx, SIEVE_INVALID, 0, 0, -1);
    }
    /* the old code (the live bytes, as the caller reads them) must verify, the new code must verify where it will run */
    place = module_place(m, NULL);
    if (sieve_core_run_maps(t, old_code, size, address, &place, NULL, NULL, NULL, old_targets))
        count += report_one(report, ctx, SIEVE_REPLACEMENT, 0, 0, -1);
    count += sieve_core_run_maps(t, new_code, size, address, &place, report, ctx, NULL, new_targets);
    /* instruction by instruction, both at once: the same boundaries, and only modifiable fields changed */
    while (at < size) {
        sieve_layout a, b;
        int la = sieve_core_decode(t, old_bytes, take(old_code, at, size, old_bytes), &a);
        int lb = sieve_core_decode(t, new_bytes, take(new_code, at, size, new_bytes), &b);
        if (!la || la != lb) { count += report_one(report, ctx, SIEVE_REPLACEMENT, at, lb ? lb : 1, b.form); break; }
        if (memcmp(old_bytes, new_bytes, (size_t)la) &&
            !may_change(t, &a, &b, old_bytes, new_bytes, at, size, old_targets, new_targets))
            count += report_one(report, ctx, SIEVE_REPLACEMENT, at, la, b.form);
        at += (size_t)la;
    }
    /* and the same jump targets: code elsewhere may jump to any of them */
    for (k = 0; at >= size && k < n; k++)
        if (old_targets[k] != new_targets[k]) { count += report_one(report, ctx, SIEVE_REPLACEMENT, k * 8, 0, -1); break; }
    free(old_targets); free(new_targets);
    return count;
}

/* ---- copy: validated code into live executable memory ------------------------------------------ */

/* A fence, then the caller's cross-core serialisation (Linux: membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED_SYNC_CORE)),
   so that every thread sees the bytes written so far before it next fetches them (Intel's cross-modifying code protocol). */
static void publish(void (*serialize)(void *), void *ctx) {
#if defined(__GNUC__) && !defined(__FRAMAC__)   /* (Frama-C: one thread) */
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
#endif
    if (serialize) serialize(ctx);
}

SIEVE_CORE_API long sieve_core_copy(const struct sieve_tables *t, uint8_t *live, const uint8_t *code, size_t size,
                                    void (*serialize)(void *), void *ctx) {
    volatile uint8_t *out = live;   /* a running thread may fetch any of these bytes at any time */
    uint8_t old_bytes[INSN] = {0}, new_bytes[INSN] = {0};
    size_t at, p, changed = 0;   /* (unsigned: one per instruction, fewer than size; EVA's widening does not know it) */
    int pass, n = 0, k;
    sieve_layout l;
    for (pass = 0; pass < 2; pass++) {   /* first that both have the same boundaries, then the writes */
        for (at = 0; at < size; at += (size_t)n) {
            n = sieve_core_decode(t, new_bytes, take(code, at, size, new_bytes), &l);
            if (pass == 0 && (!n || sieve_core_decode(t, old_bytes, take(live, at, size, old_bytes), &l) != n)) return -1;
            if (pass == 0) continue;
            take(live, at, size, old_bytes);
            if (!memcmp(old_bytes, new_bytes, (size_t)n)) continue;
            /* HLT over the first byte: a thread that arrives now traps instead of running a mix of old and new */
            out[at] = HLT;
            publish(serialize, ctx);
            for (k = 1, p = at + 1; k < n && p < size; k++, p++) out[p] = new_bytes[k];   /* (p < size: k < n, for EVA) */
            publish(serialize, ctx);
            out[at] = new_bytes[0];
            publish(serialize, ctx);
            changed++;
        }
    }
    return (long)changed;
}

/* ---- patching: refused instructions rewritten to same-length replacements ---------------------- */

static const struct sieve_rewrite *rewrite_for(const struct sieve_tables *t, int form) {
    uint32_t lo = 0, hi = t->rewrite_count;
    while (lo < hi) {
        uint32_t mid = (uint32_t)(((uint64_t)lo + hi) / 2);   /* (not lo + (hi - lo) / 2: EVA bounds this one by lo < hi) */
        if (t->rewrites[mid].form == form) return &t->rewrites[mid];
        if (t->rewrites[mid].form < form) lo = mid + 1; else hi = mid;
    }
    return NULL;
}

/* Writes the replacement of the instruction c (layout l) into out, l->length bytes; 0 when r cannot re-encode it.
   NOPs pad a shorter re-encoding: after it when it uses an index register (it must stay right after the
   instruction that restricts that register), before it otherwise (its end stays: a RIP-relative displacement and
   the instruction after it are unchanged). NaCl's loader rewrote MOVNTI the same way. */
static int rewrite(const struct sieve_tables *t, const struct sieve_rewrite *r, const uint8_t *c, const sieve_layout *l,
                   uint8_t *out) {
    uint8_t body[32] = {0}, padded[32];
    int n, k, at, tail = l->length - l->opcode_at - 1, escape = r->map == 0 ? 0 : r->map == 1 ? 1 : 2;
    sieve_layout check;
    if (l->length > 15 || l->opcode_at >= l->length || l->prefixes > l->opcode_at) return 0;   /* (never: for EVA) */
    if (r->action == SIEVE_RW_NOP) { memset(out, NOP, (size_t)l->length); return 1; }
    if (r->action != SIEVE_RW_OPCODE || l->encoding == 4 || (l->encoding && l->map != r->map) || r->map > 3) return 0;
    if (l->encoding) { memcpy(body, c, (size_t)l->length); body[l->opcode_at] = r->opcode; n = l->length; }
    else {
        memcpy(body, c, l->prefixes);
        n = l->prefixes;
        if (escape) body[n++] = 0x0F;
        if (escape == 2) body[n++] = r->map == 2 ? 0x38 : 0x3A;
        body[n++] = r->opcode;
        if (n + tail > l->length) return 0;
        for (k = l->opcode_at + 1; k < l->length && n < 32; k++) body[n++] = c[k];   /* the tail (n < 32: for EVA) */
    }
    if (sieve_core_decode(t, body, (size_t)n, &check) != n || check.form != r->to) return 0;
    at = l->index ? 0 : l->length - n;   /* where the re-encoding goes in the instruction's bytes, NOPs around it */
    if (at < 0 || at > 15) return 0;    /* (never: n <= l->length; for EVA, as the bounds below) */
    memset(padded, NOP, sizeof padded);
    for (k = 0; k < n && k < 16; k++) padded[at + k] = body[k];
    memcpy(out, padded, (size_t)l->length);
    return 1;
}

typedef struct { size_t offset[SIEVE_MAX_BUNDLE], other; int length[SIEVE_MAX_BUNDLE], form[SIEVE_MAX_BUNDLE], count; } sites_t;

/* Collects one bundle's refused instructions (the policy's refusals) and counts its other findings. */
static void collect(const sieve_finding *f, void *ctx) {
    sites_t *s = (sites_t *)ctx;
    if (f->warning || f->kind == SIEVE_BAD_JUMP_TARGET) return;   /* a jump out of the bundle alone: not this bundle's */
    s->other++;
    if (f->kind == SIEVE_BANNED && s->count < SIEVE_MAX_BUNDLE) {
        s->offset[s->count] = f->offset; s->length[s->count] = (int)f->length; s->form[s->count++] = f->form;
    }
}

/* Marks the bundle of each refused instruction (ctx: a bit per bundle, the first possibly partial, counted from the
   first bundle's start, head bytes before the code: in offsets, which base + offset passing 2^64 does not disturb). */
typedef struct { uint8_t *bundles; size_t head; uint32_t bundle_size; } flags_t;
static void flag(const sieve_finding *f, void *ctx) {
    flags_t *b = (flags_t *)ctx;
    size_t k = (b->head + f->offset) / b->bundle_size;
    if (!f->warning && f->kind == SIEVE_BANNED) b->bundles[k >> 3] |= (uint8_t)(1u << (k & 7));
}

/* Patches one bundle, code[from, to): every refused instruction rewritten (or stubbed with HLT when asked and none
   applies, or in the second attempt when the rewrites do not verify together), kept only if the bundle's findings
   (but for jumps out of it) are then its old ones less one per patched site. Returns the refused instructions left. */
static size_t patch_bundle(const struct sieve_tables *t, uint8_t *code, size_t size, size_t from, size_t to, uint64_t base,
                           int stub, sieve_site_fn site, void *ctx) {
    /* the bundle as it was and as patched, zeroed past it, and the sites' rules (for EVA: buffers of known size and
       contents; buf's 16 more bytes hold an instruction's 15 at any offset of a bundle, as EVA's intervals see it) */
    uint8_t old[SIEVE_MAX_BUNDLE] = {0}, buf[SIEVE_MAX_BUNDLE + 16] = {0};
    int rule[SIEVE_MAX_BUNDLE] = {0}, attempt, k, sites;
    sites_t before, after;
    size_t n, p, left = 0, patched;   /* (patched unsigned: at most before.count, which EVA's widening does not know) */
    /* (p < size and n < SIEVE_MAX_BUNDLE: the same as p < to, for EVA) */
    for (n = 0, p = from; p < to && p < size && n < SIEVE_MAX_BUNDLE; n++, p++) old[n] = code[p];
    memset(&before, 0, sizeof before);
    sieve_core_run(t, old, n, base + from, NULL, collect, &before, NULL);
    sites = before.count < SIEVE_MAX_BUNDLE ? before.count : SIEVE_MAX_BUNDLE;   /* (collect's bound, which EVA's widening loses) */
    for (attempt = 0; attempt < 2; attempt++) {
        memcpy(buf, old, n);
        for (k = 0, patched = 0; k < sites; k++) {
            sieve_layout l;
            const struct sieve_rewrite *r = attempt ? NULL : rewrite_for(t, before.form[k]);
            uint8_t *at = buf + before.offset[k];
            size_t avail = n - before.offset[k];
            rule[k] = -3;
            /* (15 bytes at most: all the decoder reads, and buf has them, for EVA) */
            if (sieve_core_decode(t, at, avail < 15 ? avail : 15, &l) != before.length[k]) continue;
            if (r && rewrite(t, r, at, &l, at)) rule[k] = r->rule;
            else if (stub) { memset(at, HLT, (size_t)l.length); rule[k] = -2; }
            patched += rule[k] != -3;
        }
        memset(&after, 0, sizeof after);
        sieve_core_run(t, buf, n, base + from, NULL, collect, &after, NULL);
        if (after.other + patched == before.other && (size_t)after.count + patched == (size_t)before.count) break;
        if (!stub || attempt) { memcpy(buf, old, n); for (k = 0; k < sites; k++) rule[k] = -3; break; }
    }
    for (k = 0, p = from; (size_t)k < n && p < size; k++, p++) code[p] = buf[k];   /* (p < size: as above) */
    for (k = 0; k < sites; k++) {
        sieve_site s;
        s.offset = from + before.offset[k]; s.length = before.length[k]; s.form = before.form[k]; s.rule = rule[k];
        s.bytes = buf + before.offset[k];   /* (code + s.offset's bytes, in the buffer EVA knows) */
        left += rule[k] == -3;
        if (site) site(&s, ctx);
    }
    return left;
}

SIEVE_CORE_API size_t sieve_core_patch(const struct sieve_tables *t, uint8_t *code, size_t size, uint64_t base, int stub_with_hlt,
                                       sieve_site_fn site, void *ctx) {
    flags_t flags;
    size_t bundles, k, left = 0;
    if (!size) return 0;
    /* the bundles the code touches, in offsets from the first one's start (base + size may pass 2^64) */
    flags.head = (size_t)(base & (t->bundle_size - 1)); flags.bundle_size = t->bundle_size;
    bundles = (flags.head + (size - 1)) / t->bundle_size + 1;
    /* below 1024 bundles one size, as in sieve_core_run (EVA's harness: one allocation for every size) */
    flags.bundles = (uint8_t *)calloc((bundles < 1024 ? 1024 : bundles) / 8 + 1, 1);
    if (!flags.bundles) return (size_t)-1;
    sieve_core_run(t, code, size, base, NULL, flag, &flags, NULL);
    for (k = 0; k < bundles; k++) {
        size_t from = k ? k * t->bundle_size - flags.head : 0, to = k + 1 < bundles ? (k + 1) * t->bundle_size - flags.head : size;
        if ((flags.bundles[k >> 3] >> (k & 7)) & 1) left += patch_bundle(t, code, size, from, to, base, stub_with_hlt, site, ctx);
    }
    free(flags.bundles);
    return left;
}

/* ---- pieces: one module verified on several threads, with the findings of one ------------------ */

/* Cuts code into at most n pieces of whole bundles, none under SIEVE_MIN_PIECE bytes (a thread costs more than
   verifying less), and one when the base is not bundle-aligned or the model is none (the verdict then depends on more
   than the bundle). Returns the number of pieces. */
#define SIEVE_MIN_PIECE 65536
SIEVE_CORE_API size_t sieve_core_split(const struct sieve_tables *t, size_t size, uint64_t base, sieve_piece *pieces, size_t n) {
    size_t bundles = size / t->bundle_size, k, most = size / SIEVE_MIN_PIECE;
    if (!n) return 0;
    if ((base & (t->bundle_size - 1)) || t->model_none || !bundles || most < 2) n = 1;
    else if (n > most) n = most;
    for (k = 0; k < n; k++) {   /* piece k starts after k pieces of bundles / n bundles, the first bundles % n one more */
        memset(&pieces[k], 0, sizeof pieces[k]);
        pieces[k].from = (k * (bundles / n) + (k < bundles % n ? k : bundles % n)) * t->bundle_size;
        pieces[k].to = k + 1 == n ? size : ((k + 1) * (bundles / n) + (k + 1 < bundles % n ? k + 1 : bundles % n)) * t->bundle_size;
    }
    return n;
}

/* Keeps a piece's finding, offset from the start of the module (the piece's context); past its capacity, none (the join
   then verifies the module whole). Notes a refusal, and one that may cross the piece's end (written only then: the
   judges read them beside the judge that keeps this piece's bad jumps). */
static void keep(const sieve_finding *f, void *ctx) {
    sieve_piece *p = (sieve_piece *)ctx;
    if (!f->warning && f->kind != SIEVE_BAD_JUMP_TARGET) {
        p->refuses = 1;
        if (f->offset + 15 > p->to - p->from) p->late = 1;   /* (an instruction: 15 bytes at most) */
    }
    if (p->failed || p->overflowed || !p->findings) return;
    if (p->nfindings >= p->capacity) { p->overflowed = 1; return; }
    p->findings[p->nfindings] = *f;
    p->findings[p->nfindings].offset = f->offset + p->from; p->nfindings++;
}

/* Verifies one piece (any thread; each piece once): the pass alone, its direct branches left to sieve_core_judge_piece.
   An instruction that crosses the piece's end is refused, as it is in the module (it crosses a bundle's end), though
   perhaps as another kind of finding: the join verifies the module whole when a piece refuses code that close to its
   end. The piece keeps the pass's three maps, and room for a finding per 64 bytes (SIEVE_PIECE_FINDINGS at least). A
   piece that is not one of the module's (from <= to <= size) fails, and the join refuses the module. */
SIEVE_CORE_API void sieve_core_verify_piece(const struct sieve_tables *t, const uint8_t *code, size_t size, uint64_t base,
                                            sieve_piece *p) {
    struct sieve_place place;
    size_t n = p->to - p->from;
    p->findings = NULL; p->targets = NULL; p->nfindings = 0; p->overflowed = p->look = p->refuses = p->late = p->judged = 0;
    if (p->from > p->to || p->to > size) { p->failed = 1; return; }
    place.lo = 0; place.hi = ~(uint64_t)0; place.targets = NULL; place.look = &p->look;   /* every bundle's start outside */
    p->capacity = n / 64 < SIEVE_PIECE_FINDINGS ? SIEVE_PIECE_FINDINGS : n / 64;
    p->findings = (sieve_finding *)calloc(p->capacity, sizeof *p->findings);
    p->targets = (uint8_t *)calloc((n < 1024 ? 1024 : n) / 8 + 1, 3);   /* (one size below 1 KiB: for EVA) */
    if (!p->findings || !p->targets) { p->failed = 1; return; }
    p->count = sieve_core_run_maps(t, code + p->from, n, base + p->from, &place, keep, p, &p->instructions, p->targets);
}

/* Whether the pieces' findings, each piece's jumps judged on the module, are the module's: 1 when they are, 0 when the
   module must be verified again whole, -1 when these are not the module's pieces, each verified. Where a piece refuses
   code, a bundle may start with no instruction for a jump from another piece to land on, and a piece's pass is the
   module's only where a bundle starts it (so its maps are the module's), the pass restarts there (not model none) and
   no piece refuses code that may cross its end. *refused: whether a piece refuses code. Reads only what
   sieve_core_verify_piece wrote (the judges run beside each other). */
static int pieces_state(const struct sieve_tables *t, size_t size, uint64_t base, const sieve_piece *pieces, size_t n, int *refused) {
    int failed = !n, exact = !t->model_none;
    size_t k;
    *refused = 0;
    /*@ loop unroll 4; */   /* (EVA: the pieces apart, not merged) */
    for (k = 0; k < n; k++) {
        failed |= pieces[k].failed || !pieces[k].targets || pieces[k].from != (k ? pieces[k - 1].to : 0) || (k + 1 == n && pieces[k].to != size);
        exact &= !((base + pieces[k].from) & (t->bundle_size - 1)) && !(pieces[k].late && k + 1 < n);
        *refused |= pieces[k].refuses;
    }
    return failed ? -1 : exact || !*refused || n == 1;
}

/* The target of the direct branch at code[at] (its displacement ends the instruction). */
static int64_t branch_target(const struct sieve_tables *t, const uint8_t *code, size_t size, size_t at) {
    sieve_layout l;
    uint8_t b[INSN] = {0};
    const uint8_t *d;
    int n = sieve_core_decode(t, b, take(code, at, size, b), &l);
    if (!n || !l.imm_size || at >= size || l.imm_at + l.imm_size > n) return -1;   /* (the last two: never, for EVA) */
    d = b + l.imm_at;
    return (int64_t)at + n + (l.imm_size == 1 ? (int8_t)d[0] : l.imm_size == 2 ? (int16_t)(uint16_t)(d[0] | d[1] << 8)
        : (int32_t)((uint32_t)d[0] | (uint32_t)d[1] << 8 | (uint32_t)d[2] << 16 | (uint32_t)d[3] << 24));
}

/* Whether a jump to target (from the start of the code) lands where the whole module's verification would let it. */
static int lands(const struct sieve_tables *t, const sieve_piece *pieces, size_t n, size_t size, uint64_t base, int64_t target) {
    size_t lo = 0, hi = n, at = (size_t)target, from, to;
    const uint8_t *map;
    if (target < 0 || at >= size) return !((base + (uint64_t)target) & (t->bundle_size - 1));
    while (hi - lo > 1) { size_t mid = lo + (hi - lo) / 2; if (pieces[mid].from <= at) lo = mid; else hi = mid; }
    map = pieces[lo].targets; from = pieces[lo].from; to = pieces[lo].to;   /* (% for EVA, which does not relate at to from: never changes it) */
    return map && from <= at && at < to && bit(map, (at - from) % ((to - from) | 1));
}

typedef struct { const struct sieve_tables *t; const uint8_t *code; size_t size, n; uint64_t base; const sieve_piece *pieces; sieve_piece *piece; } judge_t;

/* Keeps a bad jump the core reports in a piece (every jump that leaves it), but one that lands where the module lets it. */
static void keep_jump(const sieve_finding *f, void *ctx) {
    const judge_t *j = (const judge_t *)ctx;
    const int64_t target = branch_target(j->t, j->code, j->size, f->offset + j->piece->from);
    if ((target < (int64_t)j->piece->from || target >= (int64_t)j->piece->to) && lands(j->t, j->pieces, j->n, j->size, j->base, target)) return;
    keep(f, j->piece);
}

/* Judges piece k's direct branches on the module (any thread, each piece once, after every piece is verified; the join
   judges those no thread did): on the piece's maps where they land in it, on the piece's they land in where they leave
   it. Only where the piece's pass found a branch that may not land, or a piece refuses code (a bundle start another
   piece's jump lands on may then start no instruction); not where the join verifies the module whole. Writes piece k
   alone, reads what sieve_core_verify_piece wrote. */
SIEVE_CORE_API void sieve_core_judge_piece(const struct sieve_tables *t, const uint8_t *code, size_t size, uint64_t base,
                                           sieve_piece *pieces, size_t n, size_t k) {
    int refused;
    judge_t j;
    sieve_piece *p = pieces + k;
    if (k >= n || p->judged) return;
    p->judged = 1;
    if (pieces_state(t, size, base, pieces, n, &refused) != 1 || !(p->look || refused)) return;
    if (!p->targets || p->from > p->to || p->to > size) return;   /* (never, after pieces_state: for EVA) */
    j.t = t; j.code = code; j.size = size; j.n = n; j.base = base; j.pieces = pieces; j.piece = p;
    (void)sieve_core_report_jumps(t, code + p->from, p->to - p->from, base + p->from, p->targets, 1, 0, keep_jump, &j);   /* [1, 0]: none outside */
}

/* Reports the pieces' findings in the order one sieve_core_run over the module reports them (its sweep in offset order,
   then the bad jump targets in branch order), the jumps of the pieces no thread judged judged first (pieces_state: or the
   module verified again whole, on this thread); frees the pieces' memory. Returns the number of findings. Pieces that
   are not the module's, each once, all verified, refuse it. */
SIEVE_CORE_API size_t sieve_core_join(const struct sieve_tables *t, const uint8_t *code, size_t size, uint64_t base,
                                      sieve_piece *pieces, size_t n, sieve_report_fn report, void *ctx) {
    size_t count = 0, k, j;
    int pass, refused, overflowed = 0, state = pieces_state(t, size, base, pieces, n, &refused);
    /*@ loop unroll 4; */   /* (EVA: the pieces apart, not merged) */
    for (k = 0; k < n && state == 1; k++) { sieve_core_judge_piece(t, code, size, base, pieces, n, k); overflowed |= pieces[k].overflowed; }
    if (state == 0 || overflowed) count = sieve_core_run(t, code, size, base, NULL, report, ctx, NULL);
    else if (state < 0) count = report_one(report, ctx, SIEVE_INVALID, 0, 0, -1);   /* out of memory, or not the module's pieces */
    else for (pass = 0; pass < 2; pass++) {
        /*@ loop unroll 4; */
        for (k = 0; k < n; k++) {
            for (j = 0; j < pieces[k].nfindings && j < pieces[k].capacity && pieces[k].findings; j++) {
                const sieve_finding *f = &pieces[k].findings[j];
                if ((f->kind == SIEVE_BAD_JUMP_TARGET && !f->warning) != pass) continue;
                if (!f->warning) count++;
                if (report) report(f, ctx);
            }
        }
    }
    /*@ loop unroll 4; */
    for (k = 0; k < n; k++) { free(pieces[k].findings); free(pieces[k].targets); pieces[k].findings = NULL; pieces[k].targets = NULL; }
    return count;
}
