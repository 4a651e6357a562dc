import Analysis
import ArgumentParser
import CZydis
import Codegen
#if canImport(Glibc)
import Glibc
#endif
import Policy
import Verifier
import X86

struct BenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Measure the verifiers against Zydis: MiB/s of code, one thread and all, and the time to resolve, compile and generate.",
        discussion: """
            Verifies FILE's executable code over repeated passes and reports the median \
            throughput in MiB/s (bytes of executable code per second) of:

              - the trusted core in this process (on tables built in memory, as `sieve verify`);
              - c: the generated C verifier (the same core, cc -O2) on one thread;
              - c_threads: the same on --threads threads (default: one per processor; no more \
            threads than pieces), the code cut into pieces of whole bundles, verified, their jumps \
            judged, and joined (sieve_split, sieve_verify_piece, sieve_judge_piece, sieve_join; the \
            same findings as one thread, which the benchmark checks);
              - zydis: Zydis 4 decoding the same bytes (a linear sweep, one instruction at a time), \
            the reference decoder;

            with the ratios c / zydis and c_threads / c, next to the time to resolve the policy, \
            compile its tables and generate the C verifier. The machine is shared and noisy: \
            compare numbers from one run (Scripts/bench-verifier takes the median of several).

            The C verifier is built in a fresh private directory made by mkdtemp under $TMPDIR \
            (default /tmp), removed afterwards.

            Exit status: 0 measured, 2 error.
            """)

    @Option(name: .shortAndLong, help: "The policy file.")
    var policy: String

    @Argument(help: "An ELF64 file (its executable segments), or raw code with --raw.")
    var file: String

    @Flag(help: "Treat the file as raw code.")
    var raw = false

    @Option(help: "With --raw: virtual address of the first byte (hex with 0x, or decimal; default 0x20000).", transform: parseAddress)
    var base: UInt64?

    @Option(help: ArgumentHelp("Passes over the code (1 to \(Self.maximumPasses)); each figure is their median (a pass over "
                               + "a small module takes under a millisecond: a few hundred keep the median steady)."))
    var passes = 300

    @Option(help: "Threads for c_threads (default: one per processor).")
    var threads: Int?

    static let maximumPasses = 1_000_000

    @Option(help: "Output format: text or json.")
    var format: OutputFormat = .text

    func validate() throws {
        guard (1...Self.maximumPasses).contains(passes) else {
            throw ValidationError("--passes must be from 1 to \(Self.maximumPasses), not \(passes)")
        }
        if let threads, threads < 1 { throw ValidationError("--threads must be at least 1") }
        if base != nil && !raw { throw ValidationError("--base applies to raw code (--raw)") }
    }

    func run() throws {
        let segments = try failing { try CodeInput.segments(of: file, raw: raw, base: base ?? 0x20000) }
        let threadCount = threads ?? CorpusScan.processors
        _ = ISADatabase.shared
        var start = Clock.now()
        let resolved = try loadPolicy(policy)
        let resolveMS = (Clock.now() - start) * 1000
        start = Clock.now()
        let compiled = CompiledPolicy(resolved)
        let compileMS = (Clock.now() - start) * 1000
        let verifier = Verifier(compiled)
        let bytes = segments.reduce(0) { $0 + $1.bytes.count }

        var accepted = true
        let inProcess = Self.rate(bytes, passes) {
            for segment in segments {
                let report = segment.bytes.withUnsafeBytes { verifier.verify($0, base: segment.virtualAddress) }
                accepted = accepted && report.accepted
            }
        }
        let zydis = Self.rate(bytes, passes) { for segment in segments { ZydisSweep.run(segment.bytes) } }
        var c: CBenchmark.Result?
        var cError: String?
        do { c = try CBenchmark.run(compiled, segments, passes: passes, threads: threadCount) } catch { cError = "\(error)" }

        var out = StandardOutput()
        if format == .json {
            var fields: [String: JSON] = ["schema": .int(3), "file": .string(file), "bytes": .int(bytes), "passes": .int(passes)]
            fields["accepted"] = .bool(accepted)
            fields["in_process"] = .object(["mib_per_s": .double(inProcess)])
            fields["zydis"] = .object(["mib_per_s": .double(zydis)])
            if let c {
                fields["c"] = .object(["mib_per_s": .double(c.single), "over_zydis": .double(c.single / zydis)])
                fields["c_threads"] = .object(["mib_per_s": .double(c.threaded), "threads": .int(threadCount), "pieces": .int(c.pieces),
                                               "over_c": .double(c.threaded / c.single), "same_findings": .bool(c.sameFindings)])
            } else {
                fields["c"] = .object(["error": .string(cError ?? "unavailable")])
                fields["c_threads"] = .object(["error": .string(cError ?? "unavailable")])
            }
            fields["resolve_ms"] = .double(resolveMS)
            fields["compile_ms"] = .double(compileMS)
            fields["generate_ms"] = c.map { JSON.double($0.generateMS) } ?? .null
            print(JSON.object(fields).compact, to: &out)
        } else {
            print("\(file): \(bytes) bytes of code, \(accepted ? "accepted" : "refused"), median of \(passes) passes", to: &out)
            print("  core in process:  \(String(format3: inProcess)) MiB/s", to: &out)
            if let c {
                print("  C verifier:       \(String(format3: c.single)) MiB/s (cc -O2), \(String(format3: c.single / zydis))x Zydis", to: &out)
                print("  C, \(threadCount) thread\(threadCount == 1 ? "" : "s"):     \(String(format3: c.threaded)) MiB/s (\(c.pieces) pieces), "
                      + "\(String(format3: c.threaded / c.single))x one thread\(c.sameFindings ? "" : " -- FINDINGS DIFFER")", to: &out)
            } else {
                print("  C verifier:       unavailable (\(cError ?? "?"))", to: &out)
            }
            print("  Zydis decoding:   \(String(format3: zydis)) MiB/s", to: &out)
            print("  resolve \(String(format3: resolveMS)) ms, compile \(String(format3: compileMS)) ms"
                  + (c.map { ", generate \(String(format3: $0.generateMS)) ms" } ?? ""), to: &out)
        }
        out.flush()
        if let c, !c.sameFindings { throw ExitStatus.trouble }
    }

    /// MiB/s of `bytes` over the median of `passes` runs of `body`.
    static func rate(_ bytes: Int, _ passes: Int, _ body: () -> Void) -> Double {
        var times: [Double] = []
        for _ in 0..<passes {
            let t = Clock.now()
            body()
            times.append(Clock.now() - t)
        }
        return Double(bytes) / 1_048_576.0 / max(times.sorted()[times.count / 2], 1e-9)
    }
}

/// Zydis, the reference decoder: a linear sweep that skips a byte where it finds no instruction.
enum ZydisSweep {
    @discardableResult
    static func run(_ code: [UInt8]) -> Int {
        var instructions = 0, decoder = sieve_zydis()
        sieve_zydis_init(&decoder)
        code.withUnsafeBufferPointer { buffer in
            var at = 0
            while at < buffer.count {
                let length = Int(sieve_zydis_length(&decoder, buffer.baseAddress! + at, buffer.count - at, nil))
                at += max(length, 1)
                instructions += 1
            }
        }
        return instructions
    }
}

/// The generated C verifier, built by the system C compiler at -O2 and timed in its own process.
enum CBenchmark {
    struct Failure: Error, CustomStringConvertible { let description: String }

    static let driver = """
        #define _POSIX_C_SOURCE 199309L
        #include <pthread.h>
        #include <stdio.h>
        #include <stdlib.h>
        #include <time.h>
        #include "sieve_verifier.h"
        /* argv: passes, threads, then file base pairs. Prints the median seconds of one pass over all files on one
           thread, the same on the threads (split; the pieces verified, then judged, each by an atomic counter; join),
           the pieces, and whether the two found the same number of findings. */
        static int cmp(const void *a, const void *b) { double x = *(const double *)a, y = *(const double *)b; return (x > y) - (x < y); }
        static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return (double)t.tv_sec + (double)t.tv_nsec / 1e9; }
        typedef struct { const unsigned char *code; size_t size; unsigned long long base; sieve_piece *pieces; size_t n, next, done, judge; } job;
        static void *worker(void *arg) {
            job *j = arg;
            size_t k;
            while ((k = __atomic_fetch_add(&j->next, 1, __ATOMIC_RELAXED)) < j->n) {
                sieve_verify_piece(j->code, j->size, j->base, &j->pieces[k]);
                __atomic_fetch_add(&j->done, 1, __ATOMIC_RELEASE);
            }
            while (__atomic_load_n(&j->done, __ATOMIC_ACQUIRE) < j->n) continue;   /* every piece verified */
            while ((k = __atomic_fetch_add(&j->judge, 1, __ATOMIC_RELAXED)) < j->n) sieve_judge_piece(j->code, j->size, j->base, j->pieces, j->n, k);
            return NULL;
        }
        static size_t threaded(job *j, int threads) {
            pthread_t id[256];
            int k;
            j->n = sieve_split(j->size, j->base, j->pieces, (size_t)threads * 4);
            j->next = j->done = j->judge = 0;
            for (k = 1; k < threads && (size_t)k < j->n; k++) pthread_create(&id[k], NULL, worker, j);   /* a thread per piece at most */
            worker(j);
            for (k = 1; k < threads && (size_t)k < j->n; k++) pthread_join(id[k], NULL);
            return sieve_join(j->code, j->size, j->base, j->pieces, j->n, NULL, NULL);
        }
        int main(int argc, char **argv) {
            int passes = atoi(argv[1]), threads = atoi(argv[2]), files = (argc - 3) / 2, p, k;
            unsigned char **code = malloc(sizeof *code * (size_t)files);
            size_t *size = malloc(sizeof *size * (size_t)files), one = 0, many = 0, pieces = 0;
            unsigned long long *base = malloc(sizeof *base * (size_t)files);
            double *t = malloc(sizeof *t * (size_t)passes), *u = malloc(sizeof *u * (size_t)passes);
            sieve_piece *piece = malloc(sizeof *piece * (size_t)threads * 4);
            if (threads > 256) threads = 256;
            for (k = 0; k < files; k++) {
                FILE *f = fopen(argv[3 + 2 * k], "rb");
                if (!f) return 2;
                fseek(f, 0, SEEK_END); size[k] = (size_t)ftell(f); fseek(f, 0, SEEK_SET);
                code[k] = malloc(size[k] + 1);
                if (fread(code[k], 1, size[k], f) != size[k]) return 2;
                fclose(f);
                base[k] = strtoull(argv[4 + 2 * k], NULL, 0);
            }
            for (p = 0; p < passes; p++) {   /* one thread, then the threads: neither disturbs the other's caches */
                double a = now();
                for (k = 0; k < files; k++) one += sieve_verify(code[k], size[k], base[k], NULL, NULL);
                t[p] = now() - a;
            }
            for (p = 0; p < passes; p++) {
                double a = now();
                for (k = 0; k < files; k++) {
                    job j = { 0 };
                    j.code = code[k]; j.size = size[k]; j.base = base[k]; j.pieces = piece;
                    many += threaded(&j, threads);
                    if (p == 0) pieces += j.n;
                }
                u[p] = now() - a;
            }
            qsort(t, (size_t)passes, sizeof *t, cmp);
            qsort(u, (size_t)passes, sizeof *u, cmp);
            printf("%.9f %.9f %zu %d\\n", t[passes / 2], u[passes / 2], pieces, one == many);
            return 0;
        }
        """

    struct Result { let single: Double, threaded: Double, pieces: Int, sameFindings: Bool, generateMS: Double }

    static func run(_ compiled: CompiledPolicy, _ segments: [CodeSegment], passes: Int, threads: Int) throws -> Result {
        let scratch = try ScratchDirectory("sieve-bench")
        defer { scratch.remove() }
        let start = Clock.now()
        for (name, text) in try CVerifierGenerator(compiled).files() { try scratch.create(name, Array(text.utf8)) }
        let generateMS = (Clock.now() - start) * 1000
        let source = try scratch.create("bench.c", Array(driver.utf8))
        let program = scratch.path + "/bench"
        scratch.adopt("bench")
        guard shell(["/usr/bin/cc", "-std=c99", "-O2", "-pthread", "-o", program, source, scratch.path + "/" + CVerifierGenerator.sourceName]) == 0 else {
            throw Failure(description: "cc failed")
        }
        var arguments = [program, String(passes), String(min(threads, 256))]
        for (k, segment) in segments.enumerated() {
            arguments += [try scratch.create("code\(k).bin", segment.bytes), String(segment.virtualAddress)]
        }
        let (output, status) = try capture(arguments)
        guard status == 0 else { throw Failure(description: "the benchmark exited with status \(status)") }
        let fields = output.split(separator: " ").map { String($0).trimmingCharacters(in: .whitespacesAndNewlines) }
        guard fields.count == 4, let one = Double(fields[0]), let many = Double(fields[1]), one > 0, many > 0,
              let pieces = Int(fields[2]) else {
            throw Failure(description: "the benchmark printed '\(output)'")
        }
        let mib = Double(segments.reduce(0) { $0 + $1.bytes.count }) / 1_048_576.0
        return Result(single: mib / one, threaded: mib / many, pieces: pieces, sameFindings: fields[3] == "1", generateMS: generateMS)
    }
}
