import Foundation
import Testing
@testable import Policy
@testable import Verifier
import X86

enum Repository {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().path
    static let corpus = root + "/Tests/VerifierTests/Corpus"
    static let shared = (root as NSString).deletingLastPathComponent + "/shared/corpus"

    static func policy(_ name: String) throws -> ResolvedPolicy { try PolicyLoader.load(root + "/policies/" + name) }

    static let nacl: Verifier = { Verifier(CompiledPolicy(try! policy("nacl.yaml"))) }()
}

/// A small deterministic generator (splitmix64) for the tests' random and mutated inputs.
struct SplitMix {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func below(_ n: Int) -> Int { Int(next() % UInt64(max(n, 1))) }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// A case of the sandbox-rule corpus (`Corpus/nacl-rules.txt`, format in its header).
struct RuleCase: CustomStringConvertible, Sendable {
    var title = ""
    var why = ""
    var pad = 0
    var hex = ""
    var asm: [String] = []
    var base: UInt64 = 0
    var expected: Set<String> = []
    var accepted = false
    var warnings: Set<String> = []
    var description: String { title }

    static func load(_ path: String) throws -> [RuleCase] {
        var cases: [RuleCase] = []
        var current: RuleCase?
        var inAsm = false
        for raw in try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n", omittingEmptySubsequences: false) {
            let line = String(raw)
            if inAsm {
                if line.trimmingCharacters(in: .whitespaces).isEmpty { inAsm = false } else { current?.asm.append(line) }
                continue
            }
            if line.hasPrefix("#") || line.trimmingCharacters(in: .whitespaces).isEmpty { continue }
            if line.hasPrefix("== ") {
                if let c = current { cases.append(c) }
                current = RuleCase(title: String(line.dropFirst(3)))
                continue
            }
            let parts = line.split(separator: ":", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
            let value = parts.count > 1 ? parts[1] : ""
            switch parts[0] {
            case "why": current?.why = value
            case "pad": current?.pad = Int(value) ?? 0
            case "hex": current?.hex += " " + value
            case "asm": inAsm = true
            case "base": current?.base = UInt64(value.dropFirst(2), radix: 16) ?? 0
            case "expect":
                if value == "accepted" { current?.accepted = true } else {
                    current?.expected = Set(value.dropFirst("refused".count).split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) })
                }
            case "warn": current?.warnings = Set(value.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) })
            default: throw CorpusError(message: "unknown field in '\(line)'")
            }
        }
        if let c = current { cases.append(c) }
        return cases
    }

    struct CorpusError: Error { let message: String }

    /// The case's code, padded with HLT to whole bundles.
    func code() throws -> [UInt8] {
        var bytes = [UInt8](repeating: 0x90, count: pad)
        if !asm.isEmpty { bytes += try Assembler.assemble(asm.joined(separator: "\n")) } else {
            guard let decoded = Hex.bytes(hex) else { throw CorpusError(message: "bad hex in \(title)") }
            bytes += decoded
        }
        while bytes.count % 32 != 0 { bytes.append(0xF4) }
        return bytes
    }
}

/// GNU as, for corpus cases written in assembly.
enum Assembler {
    static func assemble(_ source: String) throws -> [UInt8] {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sieve-as-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        try (source + "\n").write(to: dir.appendingPathComponent("case.s"), atomically: true, encoding: .utf8)
        try run("/usr/bin/as", ["--64", "-o", dir.appendingPathComponent("case.o").path, dir.appendingPathComponent("case.s").path])
        try run("/usr/bin/objcopy", ["-O", "binary", "-j", ".text", dir.appendingPathComponent("case.o").path,
                                     dir.appendingPathComponent("case.bin").path])
        return Array(try Data(contentsOf: dir.appendingPathComponent("case.bin")))
    }

    static func run(_ tool: String, _ arguments: [String]) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: tool)
        process.arguments = arguments
        try process.run()
        process.waitUntilExit()
        if process.terminationStatus != 0 { throw RuleCase.CorpusError(message: "\(tool) failed") }
    }
}

@Suite struct SandboxRuleCorpusTests {
    static let cases: [RuleCase] = (try? RuleCase.load(Repository.corpus + "/nacl-rules.txt")) ?? []

    @Test func corpusIsLargeAndCoversEveryRule() {
        #expect(Self.cases.count >= 60)
        let kinds = Set(Self.cases.flatMap(\.expected))
        let rules: Set<FindingKind> = [.banned, .invalid, .sandboxForbidden, .bundleCrossing, .badJumpTarget, .unsafeIndirectBranch,
                                       .reservedRegisterWrite, .stackPointerWrite, .unsafeMemoryOperand, .unrestrictedIndex,
                                       .stringOutsideSequence, .layout]
        #expect(rules.map(\.rawValue).allSatisfy(kinds.contains), "kinds without a case: \(rules.map(\.rawValue).filter { !kinds.contains($0) })")
        #expect(Self.cases.allSatisfy { !$0.why.isEmpty && ($0.accepted || !$0.expected.isEmpty) })
    }

    @Test(arguments: cases)
    func verdict(_ c: RuleCase) throws {
        let report = Repository.nacl.verify(try c.code(), base: c.base)
        let kinds = Set(report.findings.map(\.kind.rawValue))
        let detail = report.findings.map { "\($0.offset): \($0.kind.rawValue) \($0.message)" }.joined(separator: "; ")
        if c.accepted {
            #expect(report.accepted, "\(c.title): \(detail)")
        } else {
            #expect(kinds == c.expected, "\(c.title): \(detail)")
        }
        #expect(Set(report.warnings.map(\.kind.rawValue)) == c.warnings, "\(c.title): warnings \(report.warnings.map(\.message))")
    }
}

@Suite struct NaClExecutableTests {
    static let files = ["x64_hello_world.nexe", "x64_fib_array_v2.nexe"]

    static func code(_ name: String) throws -> CodeSegment {
        let bytes = Array(try Data(contentsOf: URL(fileURLWithPath: Repository.shared + "/nacl/" + name)))
        return try #require(try ELF.executableSegments(bytes).first)
    }

    @Test(arguments: files)
    func naclProfileAcceptsTheWholeExecutable(_ name: String) throws {
        let segment = try Self.code(name)
        let report = Repository.nacl.verify(segment.bytes, base: segment.virtualAddress)
        #expect(report.findings.isEmpty, "\(report.findings.prefix(5).map { "\($0.offset) \($0.kind) \($0.message)" })")
        #expect(report.instructions > 5000)
    }

    @Test(arguments: files)
    func banningNonTemporalFindsTheirInstructions(_ name: String) throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sieve-nt-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let path = dir.appendingPathComponent("no-nt.yaml").path
        try """
            sieve: 1
            name: nacl without non-temporal hints
            extends: \(Repository.root)/policies/nacl.yaml
            ban:
              - class: non-temporal
                reason: cache-bypassing stores hammer DRAM rows
                refs: [CVE-2015-0565]
            """.write(toFile: path, atomically: true, encoding: .utf8)
        let verifier = Verifier(CompiledPolicy(try PolicyLoader.load(path)))
        let segment = try Self.code(name)
        let report = verifier.verify(segment.bytes, base: segment.virtualAddress)
        #expect(report.findings.count == 34)
        #expect(report.findings.allSatisfy { $0.kind == .banned && $0.ruleIndex != nil })
        let mnemonics = report.findings.map { ISADatabase.shared.forms[$0.formIndex!].mnemonic }
        #expect(mnemonics.filter { $0 == "movnti" }.count == 32)
        #expect(mnemonics.filter { $0 == "prefetchnta" }.count == 2)
    }
}

@Suite struct CompiledPolicyTests {
    @Test func contentHashIsDeterministicAndMeaningful() throws {
        let a = CompiledPolicy(try Repository.policy("standard.yaml"))
        let b = CompiledPolicy(try Repository.policy("standard.yaml"))
        let c = CompiledPolicy(try Repository.policy("hardened.yaml"))
        #expect(a.contentHash == b.contentHash)
        #expect(a.contentHash != c.contentHash)
        #expect(CompiledPolicy(try Repository.policy("standard.yaml"), model: SandboxSettings.Model.none).contentHash != a.contentHash)
    }

    @Test func modelNoneChecksTheSubsetOnly() throws {
        let verifier = Verifier(CompiledPolicy(try Repository.policy("nacl.yaml"), model: SandboxSettings.Model.none))
        // mov (%rax),%eax: fine without a sandbox model. A bare ret and a syscall are not: the policy
        // bans ret (nacl-forbidden in NaCl's definitions) and does not trust syscall, model or none.
        let report = verifier.verify([0x8B, 0x00, 0xC3, 0x0F, 0x05])
        #expect(report.findings.map(\.kind) == [.banned, .banned])
        #expect(report.findings.map(\.offset) == [2, 3])
        #expect(report.instructions == 3)
    }
}
