/*
 * The generated verifier's dynamic-code API (sieve_module_init, sieve_verify_region,
 * sieve_validate_replacement, sieve_copy_code, sieve_patch) driven by a script, for
 * DynamicCodeTests: the same cases through C as through CodeModule and Verifier in Swift.
 *
 * Input (the file argv[1]): one command a line, fields separated by spaces, numbers in C syntax
 * (0x...), code as hex without spaces:
 *   module BASE SIZE            a fresh module       -> "init R" (sieve_module_init's result)
 *   region ADDRESS HEX          sieve_verify_region  -> its findings, then "#COUNT"
 *   replace ADDRESS OLD NEW     sieve_validate_replacement -> its findings, then "#COUNT"
 *   copy LIVE CODE              sieve_copy_code      -> "#RESULT SERIALIZE-CALLS =LIVE-AFTER"
 *   patch BASE STUB HEX         sieve_patch          -> its sites, then "#LEFT =CODE-AFTER"
 * A finding prints as " OFFSET:KIND" (KIND! for a warning); a site as " OFFSET:LENGTH:FORM:RULE:BYTES".
 * One output line per command.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "sieve_verifier.h"

static void report(const sieve_finding *f, void *ctx) {
    (void)ctx;
    printf(" %lu:%s%s", (unsigned long)f->offset, sieve_kind_name(f->kind), f->warning ? "!" : "");
}

static void print_hex(const uint8_t *bytes, size_t n) {
    size_t k;
    for (k = 0; k < n; k++) printf("%02x", bytes[k]);
}

static void site(const sieve_site *s, void *ctx) {
    (void)ctx;
    printf(" %lu:%d:%d:%d:", (unsigned long)s->offset, s->length, s->form, s->rule);
    print_hex(s->bytes, (size_t)s->length);
}

static void serialize(void *ctx) { (*(long *)ctx)++; }

static int nibble(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* The bytes of a hex field (malloc'd, at least one byte), *n their count; NULL when it is not hex. */
static uint8_t *hex(const char *s, size_t *n) {
    size_t len = s ? strlen(s) : 0, k;
    uint8_t *out;
    if (!s || len % 2) return NULL;
    out = (uint8_t *)malloc(len / 2 + 1);
    if (!out) return NULL;
    for (k = 0; k < len / 2; k++) {
        int hi = nibble(s[2 * k]), lo = nibble(s[2 * k + 1]);
        if (hi < 0 || lo < 0) { free(out); return NULL; }
        out[k] = (uint8_t)(hi << 4 | lo);
    }
    *n = len / 2;
    return out;
}

/* The whole file, NUL-terminated. */
static char *slurp(const char *path) {
    FILE *in = fopen(path, "rb");
    char *text = NULL, *grown;
    size_t size = 0, cap = 0, got;
    if (!in) return NULL;
    do {
        if (size + 65536 + 1 > cap) {
            cap = (size + 65536 + 1) * 2;
            grown = (char *)realloc(text, cap);
            if (!grown) { free(text); fclose(in); return NULL; }
            text = grown;
        }
        got = fread(text + size, 1, 65536, in);
        size += got;
    } while (got > 0);
    fclose(in);
    text[size] = 0;
    return text;
}

int main(int argc, char **argv) {
    char *text, *line, *end;
    sieve_module module;
    uint8_t *loaded = NULL;
    if (argc < 2 || !(text = slurp(argv[1]))) return 2;
    memset(&module, 0, sizeof module);
    for (line = text; *line; line = end) {
        char *field[5] = {0};
        int count = 0;
        char *p;
        end = strchr(line, '\n');
        if (end) *end++ = 0; else end = line + strlen(line);
        for (p = strtok(line, " "); p && count < 5; p = strtok(NULL, " ")) field[count++] = p;
        if (!count) continue;
        if (!strcmp(field[0], "module") && count == 3) {
            unsigned long long base = strtoull(field[1], NULL, 0), size = strtoull(field[2], NULL, 0);
            free(loaded);
            loaded = (uint8_t *)calloc((size_t)(size / SIEVE_BUNDLE_SIZE / 8 + 1), 1);
            if (!loaded) return 2;
            printf("init %d", sieve_module_init(&module, base, size, loaded));
        } else if (!strcmp(field[0], "region") && count == 3) {
            size_t n = 0;
            uint8_t *code = hex(field[2], &n);
            if (!code) return 2;
            printf(" #%lu", (unsigned long)sieve_verify_region(&module, code, n, strtoull(field[1], NULL, 0), report, NULL));
            free(code);
        } else if (!strcmp(field[0], "replace") && count == 4) {
            size_t n = 0, m = 0;
            uint8_t *old_code = hex(field[2], &n), *new_code = hex(field[3], &m);
            if (!old_code || !new_code) return 2;
            /* The C API takes one size: a caller with two refuses, as CodeModule.validateReplacement does. */
            if (n != m) printf(" 0:%s #1", sieve_kind_name(SIEVE_REPLACEMENT));
            else printf(" #%lu", (unsigned long)sieve_validate_replacement(&module, old_code, new_code, n,
                                                                             strtoull(field[1], NULL, 0), report, NULL));
            free(old_code); free(new_code);
        } else if (!strcmp(field[0], "copy") && count == 3) {
            size_t n = 0, m = 0;
            long calls = 0, changed;
            uint8_t *live = hex(field[1], &n), *code = hex(field[2], &m);
            if (!live || !code || n != m) return 2;
            changed = sieve_copy_code(live, code, n, serialize, &calls);
            printf("#%ld %ld =", changed, calls);
            print_hex(live, n);
            free(live); free(code);
        } else if (!strcmp(field[0], "patch") && count == 4) {
            size_t n = 0, left;
            uint8_t *code = hex(field[3], &n);
            if (!code) return 2;
            left = sieve_patch(code, n, strtoull(field[1], NULL, 0), atoi(field[2]), site, NULL);
            printf(" #%lu =", (unsigned long)left);
            print_hex(code, n);
            free(code);
        } else {
            return 3;
        }
        printf("\n");
    }
    free(loaded);
    free(text);
    return 0;
}
