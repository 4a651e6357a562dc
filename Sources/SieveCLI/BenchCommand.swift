import ArgumentParser
import Policy
import Verifier
import X86

struct BenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Measure the verifiers: MiB/s of code verified, and the time to resolve, compile and generate.",
        discussion: """
            Verifies FILE's executable code in memory over repeated passes with the Swift engine \
            and with the generated C verifier (compiled by the system C compiler at -O2), and \
            reports the median throughput in MiB/s (bytes of executable code per second), next to \
            the time to resolve the policy, compile its tables and generate the C verifier.
            """)

    @Option(name: .shortAndLong, help: "The policy file.")
    var policy: String

    @Argument(help: "An ELF64 file (its executable segments), or raw code with --raw.")
    var file: String

    @Flag(help: "Treat the file as raw code.")
    var raw = false

    @Option(help: "Passes over the code.")
    var passes = 20

    @Option(help: "Output format: text or json.")
    var format: OutputFormat = .text

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
        let swift: Double = Double(bytes) / 1_048_576.0 / median
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
            var fields: [String: JSON] = ["schema": .int(1), "file": .string(file), "bytes": .int(bytes), "passes": .int(passes)]
            fields["accepted"] = .bool(accepted)
            fields["swift"] = .object(["mib_per_s": .double(swift)])
            fields["c"] = cJSON
            fields["resolve_ms"] = .double(resolveMS)
            fields["compile_ms"] = .double(compileMS)
            fields["generate_ms"] = generateJSON
            print(JSON.object(fields).compact, to: &out)
        } else {
            print("\(file): \(bytes) bytes of code, \(accepted ? "accepted" : "refused"), median of \(passes) passes", to: &out)
            print("  swift engine: \(String(format3: swift)) MiB/s", to: &out)
            if let c { print("  C verifier:   \(String(format3: c)) MiB/s (cc -O2)", to: &out) } else {
                print("  C verifier:   unavailable (\(cError ?? "?"))", to: &out)
            }
            print("  resolve \(String(format3: resolveMS)) ms, compile \(String(format3: compileMS)) ms"
                  + (generateMS.map { ", generate \(String(format3: $0)) ms" } ?? ""), to: &out)
        }
        out.flush()
    }
}

/// The generated C verifier, built and timed by the system C compiler (filled in by `sieve generate`).
enum CBenchmark {
    struct Unavailable: Error, CustomStringConvertible { let description: String }

    static func run(_ compiled: CompiledPolicy, _ segments: [CodeSegment], passes: Int) throws -> (mibPerSecond: Double, generateMS: Double) {
        throw Unavailable(description: "the C generator is not built yet")
    }
}
