import ArgumentParser
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
        abstract: "Measure the verifiers: MiB/s of code verified, and the time to resolve, compile and generate.",
        discussion: """
            Verifies FILE's executable code in memory over repeated passes with the trusted core \
            in this process (on tables built in memory, as `sieve verify` runs it) and with the \
            generated C verifier (the same core, compiled by the system C compiler at -O2), and \
            reports the median throughput in MiB/s (bytes of executable code per second), next to \
            the time to resolve the policy, compile its tables and generate the C verifier.

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

    @Option(help: "Passes over the code (1 to \(Self.maximumPasses)).")
    var passes = 20

    static let maximumPasses = 1_000_000

    @Option(help: "Output format: text or json.")
    var format: OutputFormat = .text

    func validate() throws {
        guard (1...Self.maximumPasses).contains(passes) else {
            throw ValidationError("--passes must be from 1 to \(Self.maximumPasses), not \(passes)")
        }
    }

    func run() throws {
        let segments = try failing { try CodeInput.segments(of: file, raw: raw, base: 0) }
        _ = ISADatabase.shared
        var start = Clock.now()
        let resolved = try loadPolicy(policy)
        let resolveMS = (Clock.now() - start) * 1000
        start = Clock.now()
        let compiled = CompiledPolicy(resolved)
        let compileMS = (Clock.now() - start) * 1000
        let verifier = Verifier(compiled)
        let bytes = segments.reduce(0) { $0 + $1.bytes.count }

        var times: [Double] = []
        var accepted = true
        for _ in 0..<passes {
            let t = Clock.now()
            for segment in segments {
                let report = segment.bytes.withUnsafeBytes { verifier.verify($0, base: segment.virtualAddress) }
                accepted = accepted && report.accepted
            }
            times.append(Clock.now() - t)
        }
        let median: Double = times.sorted()[times.count / 2]
        let inProcess: Double = Double(bytes) / 1_048_576.0 / median
        var c: Double?
        var generateMS: Double?
        var cError: String?
        do {
            let result = try CBenchmark.run(compiled, segments, passes: passes)
            c = result.mibPerSecond
            generateMS = result.generateMS
        } catch {
            cError = "\(error)"
        }
        var out = StandardOutput()
        if format == .json {
            let cJSON: JSON = c.map { JSON.object(["mib_per_s": .double($0)]) } ?? JSON.object(["error": .string(cError ?? "unavailable")])
            let generateJSON: JSON = generateMS.map(JSON.double) ?? .null
            var fields: [String: JSON] = ["schema": .int(2), "file": .string(file), "bytes": .int(bytes), "passes": .int(passes)]
            fields["accepted"] = .bool(accepted)
            fields["in_process"] = .object(["mib_per_s": .double(inProcess)])
            fields["c"] = cJSON
            fields["resolve_ms"] = .double(resolveMS)
            fields["compile_ms"] = .double(compileMS)
            fields["generate_ms"] = generateJSON
            print(JSON.object(fields).compact, to: &out)
        } else {
            print("\(file): \(bytes) bytes of code, \(accepted ? "accepted" : "refused"), median of \(passes) passes", to: &out)
            print("  core in process: \(String(format3: inProcess)) MiB/s", to: &out)
            if let c { print("  C verifier:      \(String(format3: c)) MiB/s (cc -O2)", to: &out) } else {
                print("  C verifier:      unavailable (\(cError ?? "?"))", to: &out)
            }
            print("  resolve \(String(format3: resolveMS)) ms, compile \(String(format3: compileMS)) ms"
                  + (generateMS.map { ", generate \(String(format3: $0)) ms" } ?? ""), to: &out)
        }
        out.flush()
    }
}

/// The generated C verifier, built by the system C compiler at -O2 and timed in its own process.
enum CBenchmark {
    struct Failure: Error, CustomStringConvertible { let description: String }

    static let driver = """
        #define _POSIX_C_SOURCE 199309L
        #include <stdio.h>
        #include <stdlib.h>
        #include <time.h>
        #include "sieve_verifier.h"
        /* argv: passes, then file base pairs. Prints the median seconds of one pass over all files. */
        static int cmp(const void *a, const void *b) { double x = *(const double *)a, y = *(const double *)b; return (x > y) - (x < y); }
        int main(int argc, char **argv) {
            int passes = atoi(argv[1]), files = (argc - 2) / 2, p, k;
            unsigned char **code = malloc(sizeof *code * (size_t)files);
            size_t *size = malloc(sizeof *size * (size_t)files), findings = 0;
            unsigned long long *base = malloc(sizeof *base * (size_t)files);
            double *t = malloc(sizeof *t * (size_t)passes);
            for (k = 0; k < files; k++) {
                FILE *f = fopen(argv[2 + 2 * k], "rb");
                if (!f) return 2;
                fseek(f, 0, SEEK_END); size[k] = (size_t)ftell(f); fseek(f, 0, SEEK_SET);
                code[k] = malloc(size[k] + 1);
                if (fread(code[k], 1, size[k], f) != size[k]) return 2;
                fclose(f);
                base[k] = strtoull(argv[3 + 2 * k], NULL, 0);
            }
            for (p = 0; p < passes; p++) {
                struct timespec a, b;
                clock_gettime(CLOCK_MONOTONIC, &a);
                for (k = 0; k < files; k++) findings += sieve_verify(code[k], size[k], base[k], NULL, NULL);
                clock_gettime(CLOCK_MONOTONIC, &b);
                t[p] = (double)(b.tv_sec - a.tv_sec) + (double)(b.tv_nsec - a.tv_nsec) / 1e9;
            }
            qsort(t, (size_t)passes, sizeof *t, cmp);
            printf("%.9f %zu\\n", t[passes / 2], findings);
            return 0;
        }
        """

    static func run(_ compiled: CompiledPolicy, _ segments: [CodeSegment], passes: Int) throws -> (mibPerSecond: Double, generateMS: Double) {
        let scratch = try ScratchDirectory("sieve-bench")
        defer { scratch.remove() }
        let start = Clock.now()
        for (name, text) in try CVerifierGenerator(compiled).files() { try scratch.create(name, Array(text.utf8)) }
        let generateMS = (Clock.now() - start) * 1000
        let source = try scratch.create("bench.c", Array(driver.utf8))
        let program = scratch.path + "/bench"
        scratch.adopt("bench")
        guard shell(["/usr/bin/cc", "-std=c99", "-O2", "-o", program, source, scratch.path + "/" + CVerifierGenerator.sourceName]) == 0 else {
            throw Failure(description: "cc failed")
        }
        var arguments = [program, String(passes)]
        for (k, segment) in segments.enumerated() {
            arguments += [try scratch.create("code\(k).bin", segment.bytes), String(segment.virtualAddress)]
        }
        let (output, status) = try capture(arguments)
        guard status == 0 else { throw Failure(description: "the benchmark exited with status \(status)") }
        guard let seconds = output.split(separator: " ").first.flatMap({ Double($0) }), seconds > 0 else {
            throw Failure(description: "the benchmark printed '\(output)'")
        }
        let bytes = segments.reduce(0) { $0 + $1.bytes.count }
        return (Double(bytes) / 1_048_576.0 / seconds, generateMS)
    }
}
