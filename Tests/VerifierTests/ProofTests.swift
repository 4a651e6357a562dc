@testable import Codegen
import Foundation
import Testing
@testable import Policy
@testable import Verifier
import SieveCore
import X86

/// The Frama-C proof of the trusted core (Scripts/prove, issue 13): the tables keep the invariants the core's
/// verdicts rely on, and the proof catches a bug injected into a generated verifier.
@Suite struct ProofTests {
    static var shippedPolicies: [String] {
        let files = (try? FileManager.default.contentsOfDirectory(atPath: Repository.root + "/policies")) ?? []
        let errata = (try? FileManager.default.contentsOfDirectory(atPath: Repository.root + "/policies/errata")) ?? []
        return files.filter { $0.hasSuffix(".yaml") }.sorted() + errata.filter { $0.hasSuffix(".yaml") }.sorted().map { "errata/" + $0 }
    }

    /// Every shipped profile's tables: indices in range, ModRM byte counts at most 5, pattern lists ending in a
    /// catch-all (CoreTables checks the same with a precondition when it builds them).
    @Test func shippedTablesKeepTheirInvariants() throws {
        #expect(Self.shippedPolicies.count > 10)
        for name in Self.shippedPolicies {
            let t = CoreTables(CompiledPolicy(try Repository.policy(name)))
            let broken = CoreTables.invariantViolations(entries: t.entries, patterns: t.patterns, modrm: t.modrm, forms: t.forms,
                                                        instanceRules: t.instanceRules, conditional: t.conditional,
                                                        ruleRegisters: t.ruleRegisters, implicitRegisters: t.implicitRegisters,
                                                        reasonKinds: t.reasonKinds, fast: t.fast)
            #expect(broken.isEmpty, "\(name): \(broken.prefix(3))")
        }
    }

    /// The check itself finds each kind of broken table.
    @Test func brokenTablesAreFound() throws {
        let t = CoreTables(CompiledPolicy(try Repository.policy("nacl.yaml")))
        func violations(entries: [sieve_entry]? = nil, patterns: [sieve_pattern]? = nil, modrm: [UInt32]? = nil,
                        forms: [sieve_form]? = nil, conditional: [UInt16]? = nil, fast: FastTables? = nil) -> [String] {
            CoreTables.invariantViolations(entries: entries ?? t.entries, patterns: patterns ?? t.patterns, modrm: modrm ?? t.modrm,
                                           forms: forms ?? t.forms, instanceRules: t.instanceRules, conditional: conditional ?? t.conditional,
                                           ruleRegisters: t.ruleRegisters, implicitRegisters: t.implicitRegisters, reasonKinds: t.reasonKinds,
                                           fast: fast ?? t.fast)
        }
        #expect(violations().isEmpty)
        var patterns = t.patterns
        patterns[patterns.count - 1].allowed = 1   // the last list loses its catch-all
        #expect(!violations(patterns: patterns).isEmpty)
        patterns = t.patterns
        patterns[0].form = UInt16(t.forms.count)
        #expect(!violations(patterns: patterns).isEmpty)
        var modrm = t.modrm
        modrm[0x84] |= 6 << 24
        #expect(!violations(modrm: modrm).isEmpty)
        var entries = t.entries
        entries[3].start.1 = UInt32(t.patterns.count)
        #expect(!violations(entries: entries).isEmpty)
        var forms = t.forms
        forms[0].conditional_start = UInt16(t.conditional.count)
        forms[0].conditional_count = 1
        #expect(!violations(forms: forms).isEmpty)
        #expect(!violations(conditional: t.conditional + [UInt16(t.instanceRules.count)]).isEmpty)
        var fast = t.fast
        fast.entries[0x89] = UInt32(fast.descriptors.count) << 16 | 2   // a row past the descriptors
        #expect(!violations(fast: fast).isEmpty)
        fast = t.fast
        fast.descriptors[3] = SIEVE_FD_TAKE.rawValue   // row 0 takes something
        #expect(!violations(fast: fast).isEmpty)
    }

    static var framaC: String? {
        ["/usr/bin/frama-c", "/usr/local/bin/frama-c"].first { FileManager.default.isExecutableFile(atPath: $0) }
    }

    /// An off-by-one injected into a copy of the generated verifier (the decoder's copy of the code reads one byte past
    /// its end) makes Scripts/prove fail; the verifier as generated passes. Needs Frama-C (Scripts/bootstrap installs it).
    @Test(.enabled(if: framaC != nil, "frama-c is not installed (Scripts/bootstrap installs it): the proof is not run"),
          .timeLimit(.minutes(20)))
    func proveCatchesAnInjectedOffByOne() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sieve-proof-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        for (name, text) in try CVerifierGenerator(CompiledPolicy(try Repository.policy("paranoid.yaml"))).files() {
            try text.write(to: dir.appendingPathComponent(name), atomically: true, encoding: .utf8)
        }
        let good = dir.appendingPathComponent("sieve_verifier.c")
        let source = try String(contentsOf: good, encoding: .utf8)
        let bound = "z.bytes[k] = pos < limit ? in[pos] : 0;"
        #expect(source.components(separatedBy: bound).count == 2, "the bound to break is in the generated verifier once")
        let broken = dir.appendingPathComponent("broken")
        try FileManager.default.createDirectory(at: broken, withIntermediateDirectories: true)
        try source.replacingOccurrences(of: bound, with: "z.bytes[k] = pos <= limit ? in[pos] : 0;")
            .write(to: broken.appendingPathComponent("sieve_verifier.c"), atomically: true, encoding: .utf8)
        try FileManager.default.copyItem(at: dir.appendingPathComponent("sieve_verifier.h"), to: broken.appendingPathComponent("sieve_verifier.h"))

        let pass = try Self.prove(["--eva-only", "--verifier", good.path])
        #expect(pass.status == 0, "the generated verifier: \(pass.output)")
        let fail = try Self.prove(["--eva-only", "--verifier", broken.appendingPathComponent("sieve_verifier.c").path])
        #expect(fail.status != 0, "the off-by-one went unnoticed: \(fail.output)")
        #expect(fail.output.contains("alarm"))
    }

    static func prove(_ arguments: [String]) throws -> (status: Int32, output: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: Repository.root + "/Scripts/prove")
        process.arguments = arguments
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        try process.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: data, as: UTF8.self))
    }
}
