import Foundation
import Testing
@testable import Policy
import X86

enum Paths {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().path
    static func policy(_ name: String) -> String { root + "/policies/" + name }

    /// Writes files into a fresh temporary folder and returns its path.
    static func folder(_ files: [String: [UInt8]]) throws -> String {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sieve-policy-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        for (name, bytes) in files { try Data(bytes).write(to: dir.appendingPathComponent(name)) }
        return dir.path
    }
}

func verdict(_ policy: ResolvedPolicy, _ hex: String) -> Bool? {
    guard case .instruction(let insn) = Decoder.shared.decode(Hex.bytes(hex)!), insn.refusal == nil else { return nil }
    return policy.decide(insn).accepted
}

/// Each erratum overlay refuses the encodings its erratum names and keeps their neighbours.
@Suite struct ErrataOverlayTests {
    struct Case: Sendable, CustomStringConvertible {
        let file: String
        let refused: [String]
        let accepted: [String]
        /// Whether `standard` already refuses the samples (the overlay then guards a loosened parent).
        var standardRefuses = false
        var description: String { file }
    }

    static let cases: [Case] = [
        Case(file: "fdiv.yaml", refused: ["d8 f1", "dc 38"], accepted: ["d8 c1", "d9 fa"]),
        Case(file: "quark-lock.yaml", refused: ["f0 01 08", "f0 48 0f c1 08"], accepted: ["01 08", "48 0f c1 08"]),
        Case(file: "ryzen-fma.yaml", refused: ["c4 e2 71 a8 c2", "c4 e2 f5 b8 c2"], accepted: ["c5 f0 58 c2", "c5 f4 59 c2"]),
        Case(file: "rowhammer.yaml", refused: ["0f ae 38", "66 0f ae 38", "0f c3 00", "66 0f e7 00"],
             accepted: ["0f ae e8", "0f ae f8", "66 0f 7f 00"]),
        Case(file: "prefetch.yaml", refused: ["0f 18 00", "0f 18 08", "0f 0d 08"], accepted: ["0f 1f 00", "0f 1f 44 00 00"]),
        Case(file: "reptar.yaml", refused: ["f3 48 a4", "f3 44 a4", "f3 41 a4"], accepted: ["f3 a4", "f3 48 a5", "48 89 c8"]),
        Case(file: "zenbleed.yaml", refused: ["c5 f8 77"], accepted: ["c5 fc 77", "c5 f8 28 c1"]),
        Case(file: "downfall.yaml", refused: ["c4 e2 69 90 04 08"], accepted: ["c4 e2 79 18 00", "c5 f8 10 00"]),
        Case(file: "taa.yaml", refused: ["c7 f8 00 00 00 00", "0f 01 d5", "f2 f0 01 08", "f3 f0 01 08", "f3 89 08"],
             accepted: ["f0 01 08", "89 08", "f3 a4"]),
        Case(file: "srbds.yaml", refused: ["0f c7 f0", "0f c7 f8"], accepted: ["0f c7 08", "0f a2"]),
        Case(file: "amd-rdrand.yaml", refused: ["0f c7 f0", "48 0f c7 f8"], accepted: ["66 0f c7 f0", "0f c7 08"]),
        // Reading SS (8C D0) is no neighbour any more: segment-register access left `base` for the
        // `segment` group, which standard does not trust. The nearest accepted encodings are MOV r, r/m.
        Case(file: "mov-ss.yaml", refused: ["8e d0", "8e 10"], accepted: ["8b d0", "8b 10"], standardRefuses: true),
        Case(file: "x87-pointers.yaml", refused: ["0f ae 00", "d9 30", "0f ae 20"], accepted: ["0f ae 10", "d9 38"]),
        Case(file: "sgx.yaml", refused: ["0f 01 d7"], accepted: ["0f 01 d6"], standardRefuses: true),
        Case(file: "timers.yaml", refused: ["0f 31", "0f 01 f9"], accepted: ["0f a2", "0f ae e8"]),
        Case(file: "user-wait.yaml", refused: ["66 0f ae f0", "f2 0f ae f0", "f3 0f ae f0"], accepted: ["0f ae f0", "0f ae 30"]),
    ]

    @Test(arguments: cases)
    func refusesTheErratumAndKeepsTheNeighbours(_ c: Case) throws {
        let overlay = try PolicyLoader.load(Paths.policy("errata/" + c.file))
        let standard = try PolicyLoader.load(Paths.policy("standard.yaml"))
        #expect(overlay.files.last?.name == "standard", "an overlay extends standard")
        #expect(overlay.rules.filter { $0.file.hasSuffix(c.file) && $0.effect == .ban }.allSatisfy { $0.reason != nil && !$0.refs.isEmpty })
        for hex in c.refused {
            #expect(verdict(overlay, hex) == false, "\(c.file) accepts \(hex)")
            if !c.standardRefuses { #expect(verdict(standard, hex) == true, "standard already refuses \(hex)") }
        }
        for hex in c.accepted {
            #expect(verdict(overlay, hex) == true, "\(c.file) refuses its neighbour \(hex)")
        }
    }

    @Test(arguments: cases)
    func overlayChecksCleanly(_ c: Case) throws {
        let overlay = try PolicyLoader.load(Paths.policy("errata/" + c.file))
        #expect(overlay.warnings.isEmpty, "\(overlay.warnings.map(\.message))")
    }

    @Test func atLeastTwelveOverlays() throws {
        let files = try FileManager.default.contentsOfDirectory(atPath: Paths.policy("errata")).filter { $0.hasSuffix(".yaml") }
        #expect(files.count >= 12)
        #expect(Set(files) == Set(Self.cases.map(\.file)), "every overlay has a case here")
    }
}

@Suite struct ShippedProfileTests {
    static let profiles = ["nacl", "nacl-2015", "standard", "hardened", "paranoid", "minimal"]

    @Test(arguments: profiles)
    func loadsCleanly(_ name: String) throws {
        let policy = try PolicyLoader.load(Paths.policy(name + ".yaml"))
        #expect(policy.warnings.isEmpty, "\(policy.warnings.map(\.message))")
        #expect(policy.description != nil)
        #expect(policy.sandbox.model == .naclX86_64)
    }

    @Test func theLadderNarrows() throws {
        func accepted(_ name: String) throws -> Set<Int> {
            let p = try PolicyLoader.load(Paths.policy(name + ".yaml"))
            return Set(ISADatabase.shared.forms.filter { p.accepted.verdict($0.index) == .accepted }.map(\.index))
        }
        let standard = try accepted("standard"), hardened = try accepted("hardened")
        let paranoid = try accepted("paranoid"), minimal = try accepted("minimal")
        #expect(hardened.isStrictSubset(of: standard))
        #expect(paranoid.isStrictSubset(of: hardened))
        #expect(minimal.isStrictSubset(of: paranoid))
        let nacl = try accepted("nacl"), nacl2015 = try accepted("nacl-2015")
        // nacl is nacl-2015 plus what NaCl accepted before its 2015 Rowhammer response: CLFLUSH and the
        // legacy and VEX non-temporal hints (not MASKMOVQ/MASKMOVDQU, which NaCl always forbade).
        #expect(nacl2015.isStrictSubset(of: nacl))
        #expect(Set(nacl.subtracting(nacl2015).map { ISADatabase.shared.forms[$0].mnemonic }) == [
            "clflush", "movntdq", "movntdqa", "movnti", "movntpd", "movntps", "movntq", "movntsd", "movntss", "prefetchnta",
            "vmovntdq", "vmovntdqa", "vmovntpd", "vmovntps",
        ])
    }

    @Test func paranoidHasNoSIMDOrX87() throws {
        let p = try PolicyLoader.load(Paths.policy("paranoid.yaml"))
        for form in p.accepted.acceptedForms() {
            #expect(!form.operands.contains { [.xmm, .ymm, .zmm, .mmx, .x87].contains($0.kind.registerClass) }, "\(form.id)")
        }
    }
}

@Suite struct ResolutionTests {
    func load(_ files: [String: String], _ main: String = "main.yaml") throws -> ResolvedPolicy {
        let dir = try Paths.folder(files.mapValues { Array($0.utf8) })
        return try PolicyLoader.load(dir + "/" + main)
    }

    @Test func orderIsInheritedThenTrustThenAllowThenBan() throws {
        let p = try load(["main.yaml": """
            sieve: 1
            name: t
            trust: [base]
            allow: [{mnemonic: clflush}]
            ban:
              - {mnemonic: add, reason: test}
              - {mnemonic: clflush, reason: test}
            """])
        #expect(verdict(p, "01 c0") == false)   // ban beats trust
        #expect(verdict(p, "0f ae 38") == false) // ban beats allow in the same file
        #expect(verdict(p, "29 c0") == true)
        #expect(verdict(p, "0f 28 c1") == false) // movaps: nothing selects it, default deny
    }

    @Test func childMayReallowAndLintWarnsOverReferencedBans() throws {
        let p = try load([
            "parent.yaml": "sieve: 1\nname: p\ntrust: [base, sse, sse2]\nban: [{mnemonic: clflush, reason: r, refs: [CVE-2015-0565]}]\n",
            "main.yaml": "sieve: 1\nname: c\nextends: parent\nallow: [{mnemonic: clflush}]\n",
        ])
        #expect(verdict(p, "0f ae 38") == true)
        #expect(p.warnings.contains { $0.message.contains("re-admits clflush_m8") && $0.mark.line == 4 })
        #expect(p.name == "c")
        #expect(p.files.map { ($0.path as NSString).lastPathComponent } == ["main.yaml", "parent.yaml"])
    }

    @Test func instanceFieldsDecideEncodings() throws {
        let p = try load(["main.yaml": """
            sieve: 1
            name: t
            trust: [base]
            ban:
              - {mnemonic: xchg, operands: memory, reason: t}
              - {register: ah, reason: t}
              - {mnemonic: rdrand, operand-size: 64, reason: t}
            allow: [{mnemonic: rdrand}]
            """])
        #expect(verdict(p, "48 87 07") == false)  // xchg [rdi], rax
        #expect(verdict(p, "48 87 c8") == true)   // xchg rax, rcx
        #expect(verdict(p, "88 e0") == false)     // mov al, ah
        #expect(verdict(p, "40 88 e0") == true)   // mov al, spl: the same ModRM bits name SPL under REX
        #expect(verdict(p, "48 0f c7 f0") == false)
        #expect(verdict(p, "0f c7 f0") == true)
    }

    @Test func trustingAnExtensionNeedsEveryExtensionItUses() throws {
        let p = try load(["main.yaml": "sieve: 1\nname: t\ntrust: [vaes]\n"])
        let q = try load(["main.yaml": "sieve: 1\nname: t\ntrust: [vaes, avx512f]\n"])
        #expect(verdict(p, "c4 e2 75 dc c2") == true)      // VEX vaesenc ymm: VAES alone
        #expect(verdict(p, "62 f2 75 48 dc c2") == false)  // the EVEX form needs AVX-512F too
        #expect(verdict(q, "62 f2 75 48 dc c2") == true)
    }

    @Test func sandboxSettingsInheritKeyByKey() throws {
        let p = try load([
            "parent.yaml": "sieve: 1\nname: p\nsandbox: {model: none, bundle-size: 64}\ntrust: [base]\n",
            "main.yaml": "sieve: 1\nname: c\nextends: ./parent.yaml\nsandbox: {bundle-size: 16}\n",
        ])
        #expect(p.sandbox.model == SandboxSettings.Model.none)
        #expect(p.sandbox.bundleSize == 16)
    }

    @Test func aliasesNameTheSameInstruction() throws {
        let p = try load(["main.yaml": "sieve: 1\nname: t\nallow: [{mnemonic: [jz, setc, sal, cmovnae]}]\n"])
        #expect(verdict(p, "74 00") == true)
        #expect(verdict(p, "0f 92 c0") == true)
        #expect(verdict(p, "d1 e0") == true)
        #expect(verdict(p, "0f 42 c1") == true)
        #expect(verdict(p, "75 00") == false)
    }
}
