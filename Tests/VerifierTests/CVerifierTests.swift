@testable import Codegen
import Foundation
import Testing
@testable import Policy
@testable import Verifier
import SieveCore
import X86

/// The generated C verifier (the core with the tables printed as C, compiled by the system compiler
/// at -O2) against the same core on the same tables built in memory (`Verifier`): the same findings
/// (offset, kind, warning) on every input, so what is tested is what is embedded.
enum CVerifierHarness {
    static let driver = """
        #include <stdio.h>
        #include <stdlib.h>
        #include "sieve_verifier.h"
        static void report(const sieve_finding *f, void *ctx) {
            (void)ctx;
            printf(" %zu:%s%s", f->offset, sieve_kind_name(f->kind), f->warning ? "!" : "");
        }
        /* Input: records of u32 size, u64 base, bytes. Output: one line of findings per record. */
        int main(int argc, char **argv) {
            FILE *in = fopen(argv[1], "rb");
            unsigned char header[12];
            if (!in || argc < 2) return 2;
            while (fread(header, 1, 12, in) == 12) {
                unsigned size = header[0] | header[1] << 8 | header[2] << 16 | (unsigned)header[3] << 24;
                unsigned long long base = 0;
                unsigned char *code = malloc(size ? size : 1);
                int k;
                for (k = 0; k < 8; k++) base |= (unsigned long long)header[4 + k] << (8 * k);
                if (fread(code, 1, size, in) != size) return 2;
                printf(" #%zu\\n", sieve_verify(code, size, base, report, NULL));
                free(code);
            }
            return 0;
        }
        """

    /// Builds the C verifier for `compiled` with the driver; returns the executable's path.
    static func build(_ compiled: CompiledPolicy, driver: String = driver) throws -> String {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sieve-c-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        for (name, text) in try CVerifierGenerator(compiled).files() {
            try text.write(to: dir.appendingPathComponent(name), atomically: true, encoding: .utf8)
        }
        try driver.write(to: dir.appendingPathComponent("driver.c"), atomically: true, encoding: .utf8)
        let binary = dir.appendingPathComponent("verify").path
        try Assembler.run("/usr/bin/cc", ["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-O2", "-o", binary,
                                         dir.appendingPathComponent("driver.c").path, dir.appendingPathComponent("sieve_verifier.c").path])
        return binary
    }

    /// Runs the C verifier over every input; one findings line per input.
    static func run(_ binary: String, _ inputs: [(code: [UInt8], base: UInt64)]) throws -> [String] {
        var batch = Data()
        for (code, base) in inputs {
            var size = UInt32(code.count).littleEndian, b = base.littleEndian
            batch.append(Data(bytes: &size, count: 4))
            batch.append(Data(bytes: &b, count: 8))
            batch.append(contentsOf: code)
        }
        let output = try execute(binary, input: batch).output
        return output.split(separator: "\n").map { line in
            let parts = line.split(separator: " ").map(String.init)
            let count = parts.first { $0.hasPrefix("#") }.map { String($0.dropFirst()) } ?? "?"
            return ([count] + parts.filter { !$0.hasPrefix("#") }.sorted()).joined(separator: " ")
        }
    }

    /// Runs a harness on one input file (written to a temporary file, removed after): its exit
    /// status and standard output.
    static func execute(_ binary: String, input: Data) throws -> (status: Int32, output: String) {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("sieve-harness-\(UUID().uuidString)")
        try input.write(to: file)
        defer { try? FileManager.default.removeItem(at: file) }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = [file.path]
        let pipe = Pipe()
        process.standardOutput = pipe
        try process.run()
        let output = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: output, as: UTF8.self))
    }

    /// The in-memory core's findings in the same line format.
    static func line(_ report: VerificationReport) -> String {
        let items = report.findings.map { "\($0.offset):\($0.kind.rawValue)" } + report.warnings.map { "\($0.offset):\($0.kind.rawValue)!" }
        return ([String(report.findings.count)] + items.sorted()).joined(separator: " ")
    }

    /// Random and mutated inputs: prefixes, escapes and real code, some of them bundle-sized.
    static func inputs(count: Int, seed: UInt64, corpus: [[UInt8]]) -> [(code: [UInt8], base: UInt64)] {
        var state = seed
        func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
        var out: [(code: [UInt8], base: UInt64)] = []
        for k in 0..<count {
            var code: [UInt8]
            if k % 2 == 0, let source = corpus.isEmpty ? nil : corpus[Int(next() % UInt64(corpus.count))] {
                let start = Int(next() % UInt64(max(1, source.count - 96)))
                code = Array(source[start..<min(source.count, start + 32 + Int(next() % 64))])
                for _ in 0..<(1 + next() % 3) where !code.isEmpty { code[Int(next() % UInt64(code.count))] = UInt8(truncatingIfNeeded: next()) }
            } else {
                code = (0..<(1 + Int(next() % 64))).map { _ in UInt8(truncatingIfNeeded: next()) }
            }
            out.append((code, next() % 4 == 0 ? 0x1000 + (next() % 64) : 0x20000))
        }
        return out
    }
}

@Suite struct CVerifierTests {
    static func policy(_ text: String) throws -> ResolvedPolicy {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sieve-cp-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let path = dir.appendingPathComponent("p.yaml").path
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return try PolicyLoader.load(path)
    }

    static let policies: [(String, @Sendable () throws -> CompiledPolicy)] = [
        ("nacl", { CompiledPolicy(try Repository.policy("nacl.yaml")) }),
        ("nacl without non-temporal", { CompiledPolicy(try policy("""
            sieve: 1
            name: no-nt
            extends: \(Repository.root)/policies/nacl.yaml
            ban: [{class: non-temporal, reason: r, refs: [CVE-2015-0565]}]
            sandbox: {call-alignment: refuse}
            """)) }),
        ("reptar (instance rules)", { CompiledPolicy(try Repository.policy("errata/reptar.yaml")) }),
        ("taa (prefix and operand rules)", { CompiledPolicy(try Repository.policy("errata/taa.yaml")) }),
        ("amd-rdrand (operand size)", { CompiledPolicy(try Repository.policy("errata/amd-rdrand.yaml")) }),
        ("mov-ss (register)", { CompiledPolicy(try Repository.policy("errata/mov-ss.yaml")) }),
        ("standard, model none", { CompiledPolicy(try Repository.policy("standard.yaml"), model: SandboxSettings.Model.none) }),
        ("nacl, 64-byte bundles", { CompiledPolicy(try policy("""
            sieve: 1
            name: nacl-64
            extends: \(Repository.root)/policies/nacl.yaml
            sandbox: {bundle-size: 64}
            """)) }),
    ]

    @Test func generatedFilesAreDeterministicAndNamed() throws {
        let compiled = CompiledPolicy(try Repository.policy("hardened.yaml"))
        let a = try CVerifierGenerator(compiled).files(), b = try CVerifierGenerator(compiled).files()
        #expect(a.map(\.text) == b.map(\.text))
        #expect(a[1].text.contains("Policy content hash: \(compiled.contentHashHex)"))
        #expect(a[0].text.contains("#define SIEVE_POLICY_NAME \"hardened\""))
        #expect(a[0].text.contains("size_t sieve_verify(const uint8_t *code, size_t size, uint64_t base, sieve_report_fn report, void *ctx);"))
        #expect(a[1].text.contains(CoreSource.core.replacing("#include \"sieve_core.h\"\n", with: "")), "the generated file holds the core verbatim")
    }

    /// `sieve generate` embeds the core the C target compiles (Scripts/gen-core-source), and the
    /// core stays small enough to audit and prove.
    @Test func embeddedCoreIsTheCTarget() throws {
        let dir = Repository.root + "/Sources/SieveCore/"
        let core = try String(contentsOfFile: dir + "core.c", encoding: .utf8)
        let header = try String(contentsOfFile: dir + "include/sieve_core.h", encoding: .utf8)
        let dyncode = try String(contentsOfFile: dir + "dyncode.c", encoding: .utf8)
        #expect(CoreSource.core + "\n" == core, "stale: run Scripts/gen-core-source")
        #expect(CoreSource.dyncode + "\n" == dyncode, "stale: run Scripts/gen-core-source")
        #expect(CoreSource.header + "\n" == header, "stale: run Scripts/gen-core-source")
        let lines = Self.linesOfCode(core)
        #expect(lines <= 600, "the trusted core stays within 600 lines of code, has \(lines)")
    }

    /// Lines holding code: neither blank nor only comment (prose, or an ACSL annotation for the proof).
    static func linesOfCode(_ source: String) -> Int {
        var inComment = false, count = 0
        for line in source.split(separator: "\n", omittingEmptySubsequences: false) {
            var rest = Substring(line), code = false
            while !rest.isEmpty {
                if inComment {
                    guard let end = rest.range(of: "*/") else { break }
                    rest = rest[end.upperBound...]; inComment = false
                    continue
                }
                let block = rest.range(of: "/*"), slashes = rest.range(of: "//")
                if let block, slashes.map({ block.lowerBound < $0.lowerBound }) ?? true {
                    code = code || !rest[..<block.lowerBound].allSatisfy(\.isWhitespace)
                    rest = rest[block.upperBound...]; inComment = true
                } else {
                    code = code || !rest[..<(slashes?.lowerBound ?? rest.endIndex)].allSatisfy(\.isWhitespace)
                    break
                }
            }
            if code { count += 1 }
        }
        return count
    }

    /// The count skips comments and ACSL, and nothing else.
    @Test func linesOfCodeSkipCommentsOnly() {
        #expect(Self.linesOfCode("int a;\n\n/* prose\n   more */\n//@ assert a == 0;\nint b; /* why */\n/*@ requires \\true; */ int c;\n") == 3)
        #expect(Self.linesOfCode("x = \"//\";\n") == 1)
    }

    /// The decoder's canonical-encoding facts (X86 knows nothing of the core) have the core's values.
    @Test func registerCheckBitsAreTheCores() {
        typealias R = DecoderTableExport.RegisterCheck
        for (ours, core) in [(R.wIgnored, SIEVE_RC_W_IGNORED), (R.lIgnored, SIEVE_RC_L_IGNORED), (R.regExtended, SIEVE_RC_REG),
                             (R.rmExtended, SIEVE_RC_RM), (R.rmVector, SIEVE_RC_RM_VECTOR), (R.is4Low, SIEVE_RC_IS4)] {
            #expect(UInt32(ours) == core.rawValue)
        }
    }

    /// Swift's finding kinds are the core's, in the core's order.
    @Test func findingKindsAreTheCores() {
        #expect(FindingKind.allCases.count == Int(SIEVE_KIND_COUNT.rawValue))
        for (k, kind) in FindingKind.allCases.enumerated() {
            #expect(String(cString: sieve_core_kind_name(Int32(k))) == kind.rawValue)
        }
    }

    /// The core's decoder against Sieve's Swift decoder (which `disasm` and `explain` use): the same
    /// length, form and refusal on real code and random bytes, and the same places for the ModRM,
    /// displacement and immediate (which replacement and patching rely on).
    @Test func coreDecoderAgreesWithTheSwiftDecoder() throws {
        let verifier = Repository.nacl
        var corpus: [[UInt8]] = []
        for file in NaClExecutableTests.files { corpus.append(try NaClExecutableTests.code(file).bytes) }
        var disagreements: [String] = [], checked = 0
        for input in CVerifierHarness.inputs(count: 20000, seed: 77, corpus: corpus) {
            for start in stride(from: 0, to: input.code.count, by: 7) {
                let bytes = Array(input.code[start...])
                var layout = sieve_layout()
                let length = verifier.withCoreTables { tables in
                    bytes.withUnsafeBufferPointer { sieve_core_decode(tables, $0.baseAddress!, bytes.count, &layout) }
                }
                let swift: (Int, Int, Bool, [UInt8]) = {
                    guard case .instruction(let i) = verifier.decoder.decode(bytes) else { return (0, -1, false, []) }
                    let fields = [i.modrmOffset, i.displacementOffset, i.displacementSize, i.immediateOffset, i.immediateSize]
                    return (i.length, i.formIndex, i.refusal != nil, fields)
                }()
                let core = [layout.modrm_at, layout.disp_at, layout.disp_size, layout.imm_at, layout.imm_size]
                checked += 1
                if Int(length) != swift.0 || Int(layout.form) != swift.1 || (layout.refused != 0) != swift.2 || (length > 0 && core != swift.3) {
                    disagreements.append("\(Hex.string(bytes.prefix(16))): core \(length) \(layout.form) \(layout.refused) \(core), swift \(swift)")
                }
            }
        }
        #expect(checked > 50000)
        #expect(disagreements.isEmpty, "\(disagreements.count):\n\(disagreements.prefix(8).joined(separator: "\n"))")
    }

    @Test(arguments: 0..<policies.count)
    func generatedVerifierAgreesWithTheInMemoryCore(_ k: Int) throws {
        let (name, make) = Self.policies[k]
        let compiled = try make()
        let binary = try CVerifierHarness.build(compiled)
        let verifier = Verifier(compiled)
        var corpus: [[UInt8]] = []
        for file in NaClExecutableTests.files { corpus.append(try NaClExecutableTests.code(file).bytes) }
        var inputs: [(code: [UInt8], base: UInt64)] = corpus.map { (code: $0, base: UInt64(0x20000)) }
        inputs += try SandboxRuleCorpusTests.cases.map { (code: try $0.code(), base: $0.base) }
        // Scripts/differential raises this to a million per policy.
        let count = ProcessInfo.processInfo.environment["SIEVE_DIFFERENTIAL_INPUTS"].flatMap(Int.init) ?? 4000
        inputs += CVerifierHarness.inputs(count: count, seed: UInt64(k + 1), corpus: corpus)
        let c = try CVerifierHarness.run(binary, inputs)
        #expect(c.count == inputs.count)
        var disagreements: [String] = []
        for (index, input) in inputs.enumerated() where index < c.count {
            let swift = CVerifierHarness.line(verifier.verify(input.code, base: input.base))
            if swift != c[index] {
                disagreements.append("\(Hex.string(input.code.prefix(48))) @\(input.base): swift [\(swift)] c [\(c[index])]")
            }
        }
        #expect(disagreements.isEmpty, "\(name): \(disagreements.count) of \(inputs.count):\n\(disagreements.prefix(8).joined(separator: "\n"))")
    }
}

/// The core's fast path against its full decode and check: the same report, finding by finding
/// (offset, length, kind, form, rule, message), on every input.
@Suite struct FastPathTests {
    static func described(_ report: VerificationReport) -> String {
        let items = (report.findings.map { ($0, "") } + report.warnings.map { ($0, "!") }).map { f, mark in
            "\(f.offset)+\(f.length):\(f.kind.rawValue)\(mark):\(f.formIndex ?? -1):\(f.ruleIndex ?? -1):\(f.message)"
        }
        return "\(report.instructions) \(report.bytes) " + items.joined(separator: " | ")
    }

    @Test(arguments: 0..<CVerifierTests.policies.count)
    func agreesWithTheFullPath(_ k: Int) throws {
        let compiled = try CVerifierTests.policies[k].1()
        let fast = Verifier(compiled), full = Verifier(compiled, fastPath: false)
        var corpus: [[UInt8]] = []
        for file in NaClExecutableTests.files { corpus.append(try NaClExecutableTests.code(file).bytes) }
        var inputs: [(code: [UInt8], base: UInt64)] = corpus.map { (code: $0, base: UInt64(0x20000)) }
        inputs += try SandboxRuleCorpusTests.cases.map { (code: try $0.code(), base: $0.base) }
        let count = ProcessInfo.processInfo.environment["SIEVE_DIFFERENTIAL_INPUTS"].flatMap(Int.init) ?? 20000
        inputs += CVerifierHarness.inputs(count: count, seed: UInt64(k + 100), corpus: corpus)
        var disagreements: [String] = []
        for input in inputs {
            let a = Self.described(fast.verify(input.code, base: input.base)), b = Self.described(full.verify(input.code, base: input.base))
            if a != b { disagreements.append("\(Hex.string(input.code.prefix(48))) @\(input.base):\n  fast [\(a)]\n  full [\(b)]") }
        }
        #expect(disagreements.isEmpty, "\(CVerifierTests.policies[k].0): \(disagreements.count) of \(inputs.count):\n\(disagreements.prefix(6).joined(separator: "\n"))")
    }
}
