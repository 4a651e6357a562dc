@testable import Codegen
import Foundation
import Testing
@testable import Policy
@testable import Verifier
import SieveCore
import X86

/// A case of the code-replacement corpus (`Corpus/replacements.txt`, format in its header).
struct ReplacementCase: CustomStringConvertible, Sendable {
    struct Region: Sendable { var address: UInt64; var hex: String }   // hex "old": the case's old code

    static let moduleBase: UInt64 = 0x20000
    static let moduleSize: UInt64 = 0x400

    var name = ""
    var why = ""
    var pad = 0
    var old = ""
    var new = ""
    var size: Int?
    var at: UInt64 = 0x20100
    var regions: [Region]?   // nil: the old code at `at`
    var accepted = false
    var expected: Set<String> = []
    var warnings: Set<String> = []
    var description: String { name }

    static func load(_ path: String) throws -> [ReplacementCase] {
        var cases: [ReplacementCase] = []
        var current: ReplacementCase?
        func number(_ text: String) throws -> UInt64 {
            guard text.hasPrefix("0x"), let value = UInt64(text.dropFirst(2), radix: 16) else { throw RuleCase.CorpusError(message: "bad address '\(text)'") }
            return value
        }
        for raw in try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n", omittingEmptySubsequences: false) {
            let line = String(raw)
            if line.hasPrefix("#") || line.trimmingCharacters(in: .whitespaces).isEmpty { continue }
            if line.hasPrefix("== ") {
                if let c = current { cases.append(c) }
                current = ReplacementCase(name: String(line.dropFirst(3)))
                continue
            }
            guard current != nil else { throw RuleCase.CorpusError(message: "a field before the first case: '\(line)'") }
            let parts = line.split(separator: ":", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
            let value = parts.count > 1 ? parts[1] : ""
            switch parts[0] {
            case "why": current!.why = value
            case "pad": current!.pad = Int(value) ?? -1
            case "old": current!.old += " " + value
            case "new": current!.new += " " + value
            case "size": current!.size = Int(value)
            case "at": current!.at = try number(value)
            case "region":
                if value == "none" { current!.regions = []; continue }
                let fields = value.split(separator: " ", maxSplits: 1).map(String.init)
                guard fields.count == 2 else { throw RuleCase.CorpusError(message: "bad region in '\(line)'") }
                current!.regions = (current!.regions ?? []) + [Region(address: try number(fields[0]), hex: fields[1])]
            case "expect":
                if value == "accepted" { current!.accepted = true } else {
                    guard value.hasPrefix("refused ") else { throw RuleCase.CorpusError(message: "bad expect in '\(line)'") }
                    current!.expected = Set(value.dropFirst("refused".count).split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) })
                }
            case "warn": current!.warnings = Set(value.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) })
            default: throw RuleCase.CorpusError(message: "unknown field in '\(line)'")
            }
        }
        if let c = current { cases.append(c) }
        return cases
    }

    /// Hex code, padded with HLT to `size` bytes (nil: to whole bundles).
    static func code(_ hex: String, pad: Int = 0, size: Int? = nil) throws -> [UInt8] {
        guard let decoded = Hex.bytes(hex) else { throw RuleCase.CorpusError(message: "bad hex '\(hex)'") }
        var bytes = [UInt8](repeating: 0x90, count: pad) + decoded
        let target = size ?? (bytes.count + 31) / 32 * 32
        while bytes.count < target { bytes.append(0xF4) }
        return bytes
    }

    func oldCode() throws -> [UInt8] { try Self.code(old, pad: pad, size: size) }
    func newCode() throws -> [UInt8] { try Self.code(new, pad: pad, size: size) }

    /// The regions verified before the replacement, in order.
    func verifiedRegions() throws -> [(address: UInt64, code: [UInt8])] {
        guard let regions else { return [(at, try oldCode())] }
        return try regions.map { ($0.address, $0.hex == "old" ? try oldCode() : try Self.code($0.hex)) }
    }
}

/// The generated verifier with `Fixtures/replacement_harness.c` (its header says the script it reads).
enum DynamicCodeHarness {
    static let fixture = Repository.root + "/Tests/VerifierTests/Fixtures/replacement_harness.c"

    /// Builds the generated C verifier for `compiled` with the harness, as CVerifierHarness.build does with its driver.
    static func build(_ compiled: CompiledPolicy) throws -> String {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sieve-dyn-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        for (name, text) in try CVerifierGenerator(compiled).files() {
            try text.write(to: dir.appendingPathComponent(name), atomically: true, encoding: .utf8)
        }
        let binary = dir.appendingPathComponent("harness").path
        try Assembler.run("/usr/bin/cc", ["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-O2", "-I", dir.path, "-o", binary,
                                         fixture, dir.appendingPathComponent("sieve_verifier.c").path])
        return binary
    }

    /// Runs the harness on a script; one output line per command.
    static func run(_ binary: String, _ commands: [String]) throws -> [String] {
        let (status, output) = try CVerifierHarness.execute(binary, input: Data((commands.joined(separator: "\n") + "\n").utf8))
        guard status == 0 else { throw RuleCase.CorpusError(message: "the harness exited with \(status)") }
        return output.split(separator: "\n", omittingEmptySubsequences: false).dropLast().map(String.init)
    }

    /// A findings line of the harness (" OFFSET:KIND ... #COUNT") in CVerifierHarness.line's format.
    static func findings(_ line: String) -> String {
        let parts = line.split(separator: " ").map(String.init)
        let count = parts.first { $0.hasPrefix("#") }.map { String($0.dropFirst()) } ?? "?"
        return ([count] + parts.filter { !$0.hasPrefix("#") }.sorted()).joined(separator: " ")
    }

    static func hex(_ bytes: [UInt8]) -> String { Hex.string(bytes, separator: "") }
    static func address(_ value: UInt64) -> String { "0x" + String(value, radix: 16) }

    /// `Verifier.patch`'s result in the harness's patch format.
    static func patchLine(_ sites: [PatchSite], left: Int, code: [UInt8]) -> String {
        let items = sites.map { s -> String in
            let rule = switch s.outcome {
            case .rewritten(rule: nil): -1
            case .rewritten(rule: let r?): r
            case .stubbed: -2
            case .left: -3
            }
            return " \(s.offset):\(s.new.count):\(s.formIndex):\(rule):\(hex(s.new))"
        }
        return items.joined() + " #\(left) =" + hex(code)
    }
}

@Suite struct DynamicCodeTests {
    static let verifier: Verifier = Verifier(CompiledPolicy(try! Repository.policy("nacl-2015.yaml")))
    static let binary: Result<String, any Error> = Result { try DynamicCodeHarness.build(verifier.compiled) }
    static let cases: [ReplacementCase] = (try? ReplacementCase.load(Repository.corpus + "/replacements.txt")) ?? []

    static func module() -> CodeModule { CodeModule(verifier, base: ReplacementCase.moduleBase, size: ReplacementCase.moduleSize)! }

    /// A case through CodeModule: the regions' reports, then the replacement's.
    static func swift(_ c: ReplacementCase) throws -> (regions: [VerificationReport], replacement: VerificationReport) {
        let module = module()
        let regions = try c.verifiedRegions().map { module.verifyRegion($0.code, at: $0.address) }
        return (regions, module.validateReplacement(old: try c.oldCode(), new: try c.newCode(), at: c.at))
    }

    /// The same case as a harness script.
    static func script(_ c: ReplacementCase) throws -> [String] {
        typealias H = DynamicCodeHarness
        return ["module \(H.address(ReplacementCase.moduleBase)) \(H.address(ReplacementCase.moduleSize))"]
            + (try c.verifiedRegions().map { "region \(H.address($0.address)) \(H.hex($0.code))" })
            + ["replace \(H.address(c.at)) \(H.hex(try c.oldCode())) \(H.hex(try c.newCode()))"]
    }

    static func detail(_ report: VerificationReport) -> String {
        (report.findings.map { "\($0.offset): \($0.kind.rawValue) (\($0.message))" } + report.warnings.map { "\($0.offset): warning \($0.kind.rawValue)" })
            .joined(separator: "; ")
    }

    // MARK: - The replacement corpus

    @Test func corpusIsLargeAndCoversTheRules() {
        #expect(Self.cases.count >= 40)
        #expect(Self.cases.filter(\.accepted).count >= 15)
        #expect(Self.cases.allSatisfy { !$0.why.isEmpty && ($0.accepted != !$0.expected.isEmpty) && $0.pad >= 0 })
        #expect(Set(Self.cases.map(\.name)).count == Self.cases.count, "case names are unique")
        let kinds = Set(Self.cases.flatMap(\.expected))
        for kind in ["replacement", "layout", "bad-jump-target", "unrestricted-index", "unsafe-indirect-branch", "reserved-register-write"] {
            #expect(kinds.contains(kind), "no case expects \(kind)")
        }
        #expect(Set(FindingKind.allCases.map(\.rawValue)).isSuperset(of: kinds.union(Self.cases.flatMap(\.warnings))), "unknown kinds")
    }

    @Test(arguments: cases)
    func replacement(_ c: ReplacementCase) throws {
        let (regions, report) = try Self.swift(c)
        for (k, region) in regions.enumerated() {
            #expect(region.accepted, "\(c.name): setup region \(k) refused: \(Self.detail(region))")
        }
        let kinds = Set(report.findings.map(\.kind.rawValue))
        if c.accepted {
            #expect(report.accepted, "\(c.name): \(Self.detail(report))")
        } else {
            #expect(kinds == c.expected, "\(c.name): \(Self.detail(report))")
        }
        #expect(Set(report.warnings.map(\.kind.rawValue)) == c.warnings, "\(c.name): \(Self.detail(report))")
    }

    /// Every case through the generated verifier's C API: the same findings (offset and kind) as
    /// CodeModule, setup included, so the C verdicts are the expectations whenever Swift's are.
    @Test func generatedVerifierAgreesOnTheCorpus() throws {
        let binary = try Self.binary.get()
        var script: [String] = [], swift: [String] = []
        for c in Self.cases {
            script += try Self.script(c)
            let (regions, report) = try Self.swift(c)
            swift += ["init 1"] + regions.map(CVerifierHarness.line) + [CVerifierHarness.line(report)]
        }
        let output = try DynamicCodeHarness.run(binary, script)
        try #require(output.count == script.count)
        let c = output.map { $0.hasPrefix("init") ? $0 : DynamicCodeHarness.findings($0) }
        var disagreements: [String] = []
        for k in script.indices where c[k] != swift[k] {
            disagreements.append("\(script[k].prefix(120)): swift [\(swift[k])] c [\(c[k])]")
        }
        #expect(disagreements.isEmpty, "\(disagreements.count) of \(script.count):\n\(disagreements.prefix(10).joined(separator: "\n"))")
    }

    // MARK: - Regions

    /// Region verification in one module, in order; each step's expected kinds ([] accepted).
    static let regionSteps: [(address: UInt64, hex: String, size: Int?, expected: Set<String>, why: String)] = [
        (0x20000, "b8 01 00 00 00", nil, [], "A: the first bundle"),
        (0x20020, "89 c0 41 8b 4c 07 10" + String(repeating: " f4", count: 25) + " 83 e0 e0 4c 01 f8 ff e0", 64, [], "B: two bundles"),
        (0x20000, "b8 01 00 00 00", nil, ["layout"], "A again: verified code"),
        (0x20040, "90", 64, ["layout"], "overlapping B's second bundle and a free one"),
        (0x20008, "90", nil, ["layout"], "not bundle-aligned"),
        (0x20060, "90", 16, ["layout"], "half a bundle"),
        (0x20400, "90", nil, ["layout"], "just past the module"),
        (0x1FFE0, "90", nil, ["layout"], "just before the module"),
        (0x203E0, "90", 64, ["layout"], "crossing the module's end"),
        (0x20060, "e9 bb ff ff ff", nil, [], "jmp to 0x20020, a bundle start of B"),
        (0x20080, "e9 9d ff ff ff", nil, ["bad-jump-target"], "jmp to 0x20022, an instruction start of B but no bundle start"),
        (0x20080, "e9 80 ff ff ff", nil, ["bad-jump-target"], "jmp to 0x20005, an instruction start of A but no bundle start"),
        (0x20080, "e9 7b 03 00 00", nil, ["bad-jump-target"], "jmp to 0x20400, past the module"),
        (0x20080, "e9 5b ff ff ff", nil, ["bad-jump-target"], "jmp to 0x1ffe0, before the module"),
        (0x20080, String(repeating: "90 ", count: 27) + "e8 60 02 00 00", nil, [], "call to 0x20300, a bundle start of the module not verified yet; 0x20080 was left free by the refusals"),
        (0x20080, "90", nil, ["layout"], "0x20080 is verified code now"),
        (0x200A0, "eb 01 b8 01 00 00 00", nil, ["bad-jump-target"], "a jump inside the region into an instruction"),
        (0x200C0, "eb 20" + String(repeating: " f4", count: 30) + " 90 90 b8 01 00 00 00", 64, [], "a jump inside the region to an instruction start of its second bundle"),
        (0x20300, "90", nil, [], "the bundle the call above lands on"),
    ]

    @Test func regionsAreVerifiedInOrderInSwiftAndC() throws {
        let module = Self.module()
        var swift: [String] = [], script = ["module 0x20000 0x400"]
        for step in Self.regionSteps {
            let code = try ReplacementCase.code(step.hex, size: step.size)
            let report = module.verifyRegion(code, at: step.address)
            #expect(Set(report.findings.map(\.kind.rawValue)) == step.expected, "\(step.why): \(Self.detail(report))")
            #expect(report.warnings.isEmpty, "\(step.why): \(Self.detail(report))")
            swift.append(CVerifierHarness.line(report))
            script.append("region \(DynamicCodeHarness.address(step.address)) \(DynamicCodeHarness.hex(code))")
        }
        // A replacement is validated against the verified regions only: B's code may be replaced by itself, not A at B.
        let b = try ReplacementCase.code(Self.regionSteps[1].hex, size: 64)
        #expect(module.validateReplacement(old: b, new: b, at: 0x20020).accepted)
        #expect(module.validateReplacement(old: b, new: b, at: 0x200E0).findings.map(\.kind) == [.layout], "0x20100 is not verified")
        // Old and new code of different sizes, and no code at all: refused, not a crash.
        #expect(module.validateReplacement(old: b, new: b + [UInt8](repeating: 0xF4, count: 32), at: 0x20020).findings.map(\.kind) == [.replacement])
        #expect(module.verifyRegion([], at: 0x20100).findings.map(\.kind) == [.layout])
        #expect(module.validateReplacement(old: [], new: [], at: 0x20020).findings.map(\.kind) == [.layout])
        // Modules that are not whole bundles.
        #expect(CodeModule(Self.verifier, base: 0x20010, size: 0x400) == nil)
        #expect(CodeModule(Self.verifier, base: 0x20000, size: 0x410) == nil)
        #expect(CodeModule(Self.verifier, base: 0x20000, size: 0) == nil)
        script += ["replace 0x20020 \(DynamicCodeHarness.hex(b)) \(DynamicCodeHarness.hex(b))",
                   "replace 0x200e0 \(DynamicCodeHarness.hex(b)) \(DynamicCodeHarness.hex(b))",
                   "replace 0x20020 \(DynamicCodeHarness.hex(b)) \(DynamicCodeHarness.hex(b + [UInt8](repeating: 0xF4, count: 32)))",
                   "module 0x20010 0x400", "module 0x20000 0x410", "module 0x20000 0"]
        swift += ["0", "1 0:layout", "1 0:replacement", "init 0", "init 0", "init 0"]
        let output = try DynamicCodeHarness.run(try Self.binary.get(), script)
        try #require(output.count == script.count)
        #expect(output[0] == "init 1")
        let c = output.dropFirst().map { $0.hasPrefix("init") ? $0 : DynamicCodeHarness.findings($0) }
        for (k, line) in c.enumerated() {
            #expect(line == swift[k], "\(script[k + 1].prefix(100)): swift [\(swift[k])] c [\(line)]")
        }
    }

    // MARK: - Copy

    /// The instructions of `old` whose bytes differ in `new`, by the Swift decoder's boundaries.
    static func changedInstructions(_ old: [UInt8], _ new: [UInt8]) -> Int {
        var at = 0, changed = 0
        while at < old.count {
            guard case .instruction(let i) = verifier.decoder.decode(Array(old[at...])) else { return -1 }
            if old[at..<at + i.length] != new[at..<at + i.length] { changed += 1 }
            at += i.length
        }
        return changed
    }

    /// What a thread running the live code could see at each fence of `copyCode` (its serialize
    /// callback has no context in Swift: one copy at a time, in this test only).
    nonisolated(unsafe) static var copyLive: UnsafeMutableRawBufferPointer?
    nonisolated(unsafe) static var copySnapshots: [[UInt8]] = []

    @Test func copyCodeWritesAcceptedReplacementsAndRefusesOtherBoundaries() throws {
        var script: [String] = [], expected: [String] = []
        var checked = 0
        for c in Self.cases where c.accepted {
            let old = try c.oldCode(), new = try c.newCode()
            var live = old
            Self.copySnapshots = []
            let changed = live.withUnsafeMutableBytes { buffer in
                Self.copyLive = buffer
                defer { Self.copyLive = nil }
                return Self.verifier.copyCode(into: buffer, from: new) { _ in DynamicCodeTests.copySnapshots.append(Array(DynamicCodeTests.copyLive!)) }
            }
            let want = Self.changedInstructions(old, new)
            #expect(changed == want, "\(c.name)")
            #expect(live == new, "\(c.name)")
            // At every fence each instruction is its old bytes, its new bytes, or starts with HLT; at most one is neither.
            #expect(Self.copySnapshots.count == 3 * want, "\(c.name): a fence after the HLT, the rest and the first byte")
            var at = 0, starts: [Range<Int>] = []
            while at < old.count, case .instruction(let i) = Self.verifier.decoder.decode(Array(old[at...])) { starts.append(at..<at + i.length); at += i.length }
            for snapshot in Self.copySnapshots {
                let mixed = starts.filter { snapshot[$0] != old[$0] && snapshot[$0] != new[$0] }
                #expect(mixed.count <= 1 && mixed.allSatisfy { snapshot[$0.lowerBound] == 0xF4 }, "\(c.name): \(Hex.string(snapshot))")
            }
            script.append("copy \(DynamicCodeHarness.hex(old)) \(DynamicCodeHarness.hex(new))")
            expected.append("#\(want) \(3 * want) =\(DynamicCodeHarness.hex(new))")   // HLT, the rest, the first byte: three fences each
            checked += 1
        }
        #expect(checked >= 15)
        #expect(Self.changedInstructions(try Self.cases.first { $0.name == "several modifiable instructions at once" }!.oldCode(),
                                         try Self.cases.first { $0.name == "several modifiable instructions at once" }!.newCode()) == 3)
        // Other boundaries: nil, and nothing written.
        for name in ["instruction boundary moved", "NOPs replaced by an instruction"] {
            let c = try #require(Self.cases.first { $0.name == name })
            let old = try c.oldCode(), new = try c.newCode()
            var live = old
            let changed = live.withUnsafeMutableBytes { Self.verifier.copyCode(into: $0, from: new) }
            #expect(changed == nil, "\(name)")
            #expect(live == old, "\(name)")
            script.append("copy \(DynamicCodeHarness.hex(old)) \(DynamicCodeHarness.hex(new))")
            expected.append("#-1 0 =\(DynamicCodeHarness.hex(old))")
        }
        // A live buffer of another size: nil.
        var short = [UInt8](repeating: 0xF4, count: 16)
        #expect(short.withUnsafeMutableBytes { Self.verifier.copyCode(into: $0, from: [UInt8](repeating: 0x90, count: 32)) } == nil)
        #expect(try DynamicCodeHarness.run(try Self.binary.get(), script) == expected)
    }

    // MARK: - Patch

    static func swiftPatch(_ code: [UInt8], base: UInt64, stub: Bool) -> String {
        var out = code
        let sites = verifier.patch(&out, base: base, stubWithHLT: stub)
        let left = sites.filter { $0.outcome == .left }.count
        return DynamicCodeHarness.patchLine(sites, left: left, code: out)
    }

    /// `sieve_patch` and `Verifier.patch` on the shared NaCl executables, on them mutated, and on
    /// random and mutated pieces: the same bytes and the same sites.
    @Test func generatedPatchAgreesWithSwift() throws {
        var inputs: [(code: [UInt8], base: UInt64)] = []
        var corpus: [[UInt8]] = []
        for file in NaClExecutableTests.files {
            let segment = try NaClExecutableTests.code(file)
            corpus.append(segment.bytes)
            inputs.append((segment.bytes, segment.virtualAddress))
            var state: UInt64 = 0x5EED &+ UInt64(segment.bytes.count), mutated = segment.bytes
            for _ in 0..<400 {
                state = state &* 6364136223846793005 &+ 1442695040888963407
                mutated[Int((state >> 33) % UInt64(mutated.count))] = UInt8(truncatingIfNeeded: state >> 17)
            }
            inputs.append((mutated, segment.virtualAddress))
        }
        inputs += CVerifierHarness.inputs(count: 3000, seed: 12, corpus: corpus)
        var script: [String] = [], swift: [String] = []
        for input in inputs where !input.code.isEmpty {
            for stub in [false, true] {
                script.append("patch \(DynamicCodeHarness.address(input.base)) \(stub ? 1 : 0) \(DynamicCodeHarness.hex(input.code))")
                swift.append(Self.swiftPatch(input.code, base: input.base, stub: stub))
            }
        }
        let c = try DynamicCodeHarness.run(try Self.binary.get(), script)
        try #require(c.count == script.count)
        var disagreements: [String] = []
        for k in script.indices where c[k] != swift[k] {
            disagreements.append("\(script[k].prefix(140)):\n  swift [\(swift[k].prefix(300))]\n  c     [\(c[k].prefix(300))]")
        }
        #expect(disagreements.isEmpty, "\(disagreements.count) of \(script.count):\n\(disagreements.prefix(6).joined(separator: "\n"))")
        #expect(swift.filter { $0.split(separator: " ").contains { $0.hasPrefix("#") && $0 != "#0" } || $0.contains(":-1:") }.count > 100,
                "the inputs exercise rewrites and refusals")
    }

    @Test(arguments: NaClExecutableTests.files)
    func patchedExecutableVerifies(_ file: String) throws {
        let segment = try NaClExecutableTests.code(file)
        let before = Self.verifier.verify(segment.bytes, base: segment.virtualAddress)
        #expect(before.findings.count == 34 && before.findings.allSatisfy { $0.kind == .banned }, "\(Self.detail(before).prefix(400))")
        var code = segment.bytes
        let sites = Self.verifier.patch(&code, base: segment.virtualAddress, stubWithHLT: false)
        #expect(sites.count == 34)
        #expect(sites.allSatisfy { if case .rewritten = $0.outcome { true } else { false } }, "every site rewritten")
        let mnemonics = sites.map { ISADatabase.shared.forms[$0.formIndex].mnemonic }
        #expect(mnemonics.filter { $0 == "movnti" }.count == 32)
        #expect(mnemonics.filter { $0 == "prefetchnta" }.count == 2)
        let after = Self.verifier.verify(code, base: segment.virtualAddress)
        #expect(after.findings.isEmpty, "\(Self.detail(after).prefix(400))")
        // Only the sites' bytes changed.
        var inSite = [Bool](repeating: false, count: code.count)
        for s in sites { for k in s.offset..<s.offset + s.new.count { inSite[k] = true } }
        let outside = code.indices.filter { code[$0] != segment.bytes[$0] && !inSite[$0] }
        #expect(outside.isEmpty, "changed outside the sites at \(outside.prefix(10))")
        #expect(sites.allSatisfy { Array(segment.bytes[$0.offset..<$0.offset + $0.old.count]) == $0.old && Array(code[$0.offset..<$0.offset + $0.new.count]) == $0.new && $0.old != $0.new })
        // The generated sieve_patch: the same bytes and sites.
        let c = try DynamicCodeHarness.run(try Self.binary.get(), ["patch \(DynamicCodeHarness.address(segment.virtualAddress)) 0 \(DynamicCodeHarness.hex(segment.bytes))"])
        #expect(c == [DynamicCodeHarness.patchLine(sites, left: 0, code: code)])
    }

    /// Code whose address range ends at 2^64: `sieve_patch` counts bundles from the first bundle's start, not
    /// from addresses that wrap (it once found ~2^61 bundles there, failed to allocate, and patched nothing).
    /// Two bundles that each hold a refused instruction are patched as they are at an ordinary base.
    @Test func patchAtTheTopOfTheAddressSpace() throws {
        let segment = try NaClExecutableTests.code("x64_fib_array_v2.nexe")
        var copy = segment.bytes
        let site = try #require(Self.verifier.patch(&copy, base: segment.virtualAddress, stubWithHLT: false).first)
        let bundle = site.offset / 32 * 32
        let code = Array(segment.bytes[bundle..<bundle + 32]) + Array(segment.bytes[bundle..<bundle + 32])
        let bases: [UInt64] = [0x20000, 0xFFFF_FFFF_FFFF_FFE0, 0xFFFF_FFFF_FFFF_FFC0]
        let script = bases.map { "patch \(DynamicCodeHarness.address($0)) 0 \(DynamicCodeHarness.hex(code))" }
        let lines = try DynamicCodeHarness.run(try Self.binary.get(), script)
        try #require(lines.count == 3)
        #expect(lines[0].split(separator: " ").filter { $0.contains(":") }.count == 2, "both bundles patched: \(lines[0])")
        #expect(lines[0].hasSuffix(" #0 =" + DynamicCodeHarness.hex(Array(copy[bundle..<bundle + 32]) + Array(copy[bundle..<bundle + 32]))))
        #expect(lines[1] == lines[0])
        #expect(lines[2] == lines[0])
    }
}

/// The replacement rules restated in Swift, over the Swift decoder's instruction fields, against
/// `CodeModule.validateReplacement` on mutations of verified code: the corpus's old code and every
/// bundle of the shared NaCl executables that verifies as a region of its own. Only the jump-target
/// map (which instruction starts a jump may land on) and the new code's own verdict come from the core.
@Suite struct DynamicCodeRuleTests {
    static let verifier = DynamicCodeTests.verifier

    /// NaCl's nacl-amd64-modifiable forms: mov 88/89/8A/8B/B0+r/B8+r/C6 /0/C7 /0 and call rel32.
    static func modifiable(_ form: Form) -> Bool {
        guard form.encoding == .legacy, form.map == .oneByte else { return false }
        return (form.mnemonic == "mov" && [0x88, 0x89, 0x8A, 0x8B, 0xB0, 0xB8, 0xC6, 0xC7].contains(form.opcode))
            || (form.mnemonic == "call" && form.opcode == 0xE8)
    }

    /// The core's findings count and jump-target map for code at `address` of a module [lo, hi].
    static func run(_ code: [UInt8], at address: UInt64, lo: UInt64, hi: UInt64) -> (findings: [String], targets: [Bool]) {
        var map = [UInt8](repeating: 0, count: code.count / 8 + 1)
        let report = map.withUnsafeMutableBufferPointer { targets in
            code.withUnsafeBytes { bytes in
                verifier.collect(bytes, base: address) { tables, report, ctx in
                    var place = sieve_place(lo: lo, hi: hi, targets: targets.baseAddress, look: nil)
                    return sieve_core_run(tables, bytes.baseAddress!.assumingMemoryBound(to: UInt8.self), bytes.count, address, &place, report, ctx, nil)
                }
            }
        }
        return (report.findings.map(\.kind.rawValue), code.indices.map { map[$0 >> 3] >> ($0 & 7) & 1 == 1 })
    }

    /// Instruction starts and lengths by the Swift decoder; nil when some bytes do not decode.
    static func instructions(_ code: [UInt8]) -> [(at: Int, insn: Instruction)]? {
        var out: [(Int, Instruction)] = [], at = 0
        while at < code.count {
            guard case .instruction(let i) = verifier.decoder.decode(Array(code[at...])) else { return nil }
            out.append((at, i))
            at += i.length
        }
        return out
    }

    /// The kinds the rules expect for replacing verified `old` by `new` at `address`.
    static func expected(old: [UInt8], new: [UInt8], at address: UInt64, lo: UInt64, hi: UInt64) -> Set<String> {
        let a = run(old, at: address, lo: lo, hi: hi), b = run(new, at: address, lo: lo, hi: hi)
        var kinds = Set(b.findings)
        guard let x = instructions(old), let y = instructions(new), x.map(\.insn.length) == y.map(\.insn.length) else {
            return kinds.union(["replacement"])
        }
        if a.targets != b.targets || !a.findings.isEmpty { kinds.insert("replacement") }
        for ((at, i), (_, j)) in zip(x, y) where old[at..<at + i.length] != new[at..<at + i.length] {
            let fields = [(Int(j.displacementOffset), Int(j.displacementSize)), (Int(j.immediateOffset), Int(j.immediateSize))]
            let onlyFields = (0..<i.length).allSatisfy { k in
                old[at + k] == new[at + k] || fields.contains { $0.1 > 0 && k >= $0.0 && k < $0.0 + $0.1 }
            }
            let end = at + i.length
            let inSequence = !a.targets[at] || !b.targets[at] || (end < old.count && (!a.targets[end] || !b.targets[end]))
            if i.formIndex != j.formIndex || !modifiable(ISADatabase.shared.forms[i.formIndex]) || !onlyFields || inSequence {
                kinds.insert("replacement")
            }
        }
        return kinds
    }


    /// A mutation of `code`: bytes of one instruction's displacement or immediate (mostly), or any byte.
    static func mutate(_ code: [UInt8], _ random: inout SplitMix) -> [UInt8] {
        var out = code
        guard let list = instructions(code) else { return out }
        for _ in 0..<(1 + random.below(2)) {
            let (at, i) = list[random.below(list.count)]
            let fields = [(Int(i.displacementOffset), Int(i.displacementSize)), (Int(i.immediateOffset), Int(i.immediateSize))].filter { $0.1 > 0 }
            if random.below(10) < 7, let field = fields.isEmpty ? nil : fields[random.below(fields.count)] {
                out[at + field.0 + random.below(field.1)] = UInt8(truncatingIfNeeded: random.next())
            } else {
                out[random.below(out.count)] = UInt8(truncatingIfNeeded: random.next())
            }
        }
        return out
    }

    @Test func mutationsOfVerifiedCodeGetTheRulesVerdict() throws {
        typealias H = DynamicCodeHarness
        // Regions: the corpus's old code at its address, and the executables' bundles that verify alone;
        // the harness script verifies the same regions in the same modules.
        var regions: [(module: CodeModule, address: UInt64, code: [UInt8])] = []
        var setup: [[String]] = [], setupLines: [[String]] = []   // per module: its commands, and Swift's results
        for c in DynamicCodeTests.cases where c.regions == nil && c.size == nil && c.at == 0x20100 {
            let module = DynamicCodeTests.module()
            let report = module.verifyRegion(try c.oldCode(), at: c.at)
            if report.accepted {
                regions.append((module, c.at, try c.oldCode()))
                setup.append(["module \(H.address(module.base)) \(H.address(module.size))", "region \(H.address(c.at)) \(H.hex(try c.oldCode()))"])
                setupLines.append(["init 1", CVerifierHarness.line(report)])
            }
        }
        for file in NaClExecutableTests.files {
            let segment = try NaClExecutableTests.code(file)
            let base = segment.virtualAddress & ~31, size = (segment.virtualAddress - base + UInt64(segment.bytes.count) + 31) & ~31
            let module = try #require(CodeModule(Self.verifier, base: base, size: size))
            let lead = [UInt8](repeating: 0xF4, count: Int(segment.virtualAddress - base))
            let bytes = lead + segment.bytes + [UInt8](repeating: 0xF4, count: Int(size) - lead.count - segment.bytes.count)
            var commands = ["module \(H.address(base)) \(H.address(size))"], lines = ["init 1"]
            for start in stride(from: 0, to: bytes.count, by: 32) {
                let code = Array(bytes[start..<start + 32])
                let report = module.verifyRegion(code, at: base + UInt64(start))
                if report.accepted {
                    regions.append((module, base + UInt64(start), code))
                    commands.append("region \(H.address(base + UInt64(start))) \(H.hex(code))")
                    lines.append(CVerifierHarness.line(report))
                }
            }
            setup.append(commands)
            setupLines.append(lines)
        }
        #expect(regions.count > 2000)
        var random = SplitMix(seed: 2015)
        var disagreements: [String] = [], accepted = 0, refused = 0
        var replacements: [(module: ObjectIdentifier, command: String, swift: String)] = []
        for round in 0..<4 {
            for (module, address, old) in regions {
                let new = round == 0 && random.below(8) == 0 ? old : Self.mutate(old, &random)
                let lo = module.base, hi = module.base + (module.size - 1)
                let want = Self.expected(old: old, new: new, at: address, lo: lo, hi: hi)
                let report = module.validateReplacement(old: old, new: new, at: address)
                let got = Set(report.findings.map(\.kind.rawValue))
                if got.isEmpty { accepted += 1 } else { refused += 1 }
                if got != want {
                    disagreements.append("at 0x\(String(address, radix: 16)) old \(H.hex(old)) new \(H.hex(new)): rules \(want.sorted()) got \(got.sorted()) \(DynamicCodeTests.detail(report))")
                }
                replacements.append((ObjectIdentifier(module), "replace \(H.address(address)) \(H.hex(old)) \(H.hex(new))", CVerifierHarness.line(report)))
            }
        }
        #expect(accepted > 1000 && refused > 1000, "accepted \(accepted), refused \(refused)")
        #expect(disagreements.isEmpty, "\(disagreements.count):\n\(disagreements.prefix(8).joined(separator: "\n"))")

        // The generated verifier: each module's regions, then its replacements, the same findings.
        var modules: [ObjectIdentifier] = []
        for (module, _, _) in regions where modules.last != ObjectIdentifier(module) { modules.append(ObjectIdentifier(module)) }
        try #require(modules.count == setup.count)
        var script: [String] = [], swift: [String] = []
        for (k, id) in modules.enumerated() {
            script += setup[k]
            swift += setupLines[k]
            for r in replacements where r.module == id { script.append(r.command); swift.append(r.swift) }
        }
        let output = try H.run(try DynamicCodeTests.binary.get(), script)
        try #require(output.count == script.count)
        var differ: [String] = []
        for k in script.indices {
            let c = output[k].hasPrefix("init") ? output[k] : H.findings(output[k])
            if c != swift[k] { differ.append("\(script[k].prefix(160)): swift [\(swift[k])] c [\(c)]") }
        }
        #expect(differ.isEmpty, "\(differ.count) of \(script.count):\n\(differ.prefix(8).joined(separator: "\n"))")
    }
}

/// `sieve_core_run_maps` (the verification in the caller's memory: for a runtime without a heap, and the entry point WP
/// proves for every size) is `sieve_core_run`: the same findings in the same order and the same jump-target map, on
/// the NaCl executables' code and on mutations of it; with no maps (the caller's allocation failed), one invalid finding.
@Suite struct CallerMemoryTests {
    static func run(_ code: [UInt8], base: UInt64, maps: Bool) -> (findings: [Finding], targets: [UInt8]) {
        var targets = [UInt8](repeating: 0, count: code.count / 8 + 1)
        var scratch = [UInt8](repeating: 0, count: maps ? 3 * (code.count / 8 + 1) : 0)
        let report = targets.withUnsafeMutableBufferPointer { targets in
            scratch.withUnsafeMutableBufferPointer { scratch in
                code.withUnsafeBytes { bytes in
                    Repository.nacl.collect(bytes, base: base) { tables, report, ctx in
                        let start = bytes.baseAddress!.assumingMemoryBound(to: UInt8.self)
                        var place = sieve_place(lo: 0, hi: ~0, targets: targets.baseAddress, look: nil)
                        return maps ? sieve_core_run_maps(tables, start, bytes.count, base, &place, report, ctx, nil, scratch.baseAddress)
                            : sieve_core_run(tables, start, bytes.count, base, &place, report, ctx, nil)
                    }
                }
            }
        }
        return (report.findings, targets)
    }

    @Test func theCallersMapsGiveWhatTheCoresAllocationGives() throws {
        let code = try ThreadedVerificationTests.module(copies: 1)
        var random = SplitMix(seed: 0xCA11E2)
        for mutations in [0, 20, 2000] {
            var mutated = code
            for _ in 0..<mutations { mutated[random.below(code.count)] = UInt8(truncatingIfNeeded: random.next()) }
            let core = Self.run(mutated, base: 0x20000, maps: false), caller = Self.run(mutated, base: 0x20000, maps: true)
            #expect(mutations == 0 ? core.findings.isEmpty : core.findings.count > mutations / 4, "\(mutations) mutations: \(core.findings.count) findings")
            #expect(caller.findings == core.findings, "\(mutations) mutations")
            #expect(caller.targets == core.targets && core.targets.contains { $0 != 0 })
        }
    }

    @Test func noMapsIsOneInvalidFinding() {
        let findings = Repository.nacl.collect(UnsafeRawBufferPointer(start: nil, count: 0), base: 0) { tables, report, ctx in
            let nop: [UInt8] = [0x90]
            return nop.withUnsafeBufferPointer { sieve_core_run_maps(tables, $0.baseAddress!, 1, 0, nil, report, ctx, nil, nil) }
        }.findings
        #expect(findings.map(\.kind) == [.invalid] && findings.first?.offset == 0)
    }
}
