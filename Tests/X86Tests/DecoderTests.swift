import Testing
@testable import X86

@Suite struct DecoderTests {
    let decoder = Decoder.shared

    func decode(_ hex: String) -> Decoded {
        decoder.decode(Hex.bytes(hex)!)
    }

    func form(_ hex: String) -> String? {
        if case .instruction(let insn) = decode(hex) { return decoder.form(of: insn).id }
        return nil
    }

    @Test func databaseCoversTheInstructionSet() {
        let forms = ISADatabase.shared.forms
        #expect(forms.count >= 4300)
        let encodings = Set(forms.map(\.encoding))
        #expect(encodings == Set(Encoding.allCases))
        // Vendor families are present and marked.
        for feature in ["xop", "fma4", "tbm", "d3now", "sse4a"] {
            let family = forms.filter { $0.cpuid.contains(feature) }
            #expect(!family.isEmpty, "no \(feature) forms")
            #expect(family.allSatisfy { $0.vendor == .amd }, "\(feature) not marked amd")
        }
        #expect(forms.filter { $0.cpuid.contains("padlock_ace") }.allSatisfy { $0.vendor == .via })
        for feature in ["avx512f", "amx_tile", "cet_ss", "rtm", "sgx1", "avx2", "fma", "f16c", "bmi2", "sha", "gfni"] {
            #expect(forms.contains { $0.cpuid.contains(feature) }, "no \(feature) forms")
        }
        #expect(ISADatabase.shared["clflush_m8"]?.opcodeString == "NP 0F AE /7")
        #expect(ISADatabase.shared["wrmsr"]?.classes.contains(.privileged) == true)
    }

    /// Every form's sample (proved against iced-x86 by the generator) decodes to that form,
    /// with its whole length.
    @Test func everySampleDecodesToItsForm() {
        var failures: [String] = []
        for form in ISADatabase.shared.forms {
            switch decoder.decode(form.sample) {
            case .instruction(let insn):
                if insn.formIndex != form.index || insn.length != form.sample.count {
                    failures.append("\(form.id) \(Hex.string(form.sample)): got \(decoder.form(of: insn).id) length \(insn.length)")
                }
            case .invalid(let reason):
                failures.append("\(form.id) \(Hex.string(form.sample)): invalid, \(reason)")
            }
        }
        #expect(failures.isEmpty, "\(failures.count) forms:\n\(failures.prefix(60).joined(separator: "\n"))")
    }

    @Test func lengthsAndForms() {
        #expect(form("90") == "nopd")
        #expect(form("4190") == "xchg_r32_eax")
        #expect(form("f390") == "pause")
        #expect(form("0fae38") == "clflush_m8")
        #expect(form("0faef8") == "sfence")
        #expect(form("66666666662e0f1f840000000000") == "nop_rm16")
        #expect(form("48b80100000000000000") == "mov_r64_imm64")
        #expect(form("a1 0000000000000000") == "mov_eax_moffs32")
        #expect(form("67a1 00000000") == "mov_eax_moffs32")
        #expect(form("c4e27d5a1a") == "vex_vbroadcasti128_ymm_m128")
        #expect(form("62f37d203f0700") == "evex_vpcmpb_kr_k1_ymm_ymmm256_imm8")
        #expect(form("0f0fc00c") == "d3now_pi2fw_mm_mmm64")
    }

    @Test func invalidEncodings() {
        #expect(decode("0f04") == .invalid(.undefined))
        #expect(decode("f0 01 c0") == .invalid(.lockNotAllowed))   // LOCK on a register destination
        #expect(decode("f0 90") == .invalid(.lockNotAllowed))
        #expect(decode("66 c5f877") == .invalid(.prefixBeforeVEX))
        #expect(decode("c5f0 77") == .invalid(.unusedVVVV))        // vzeroupper with vvvv != 1111
        #expect(decode("0fae") == .invalid(.truncated))
        #expect(decode(String(repeating: "66", count: 15) + "90") == .invalid(.tooLong))
        #expect(decode("0f01f8") != .invalid(.undefined))          // swapgs decodes (privileged)
        #expect(decode("8d c0") == .invalid(.undefined))           // LEA with a register operand
    }

    @Test func refusals() {
        func refusal(_ hex: String) -> Refusal?? {
            if case .instruction(let insn) = decode(hex) { return .some(insn.refusal) }
            return nil
        }
        #expect(refusal("48 66 01 c0") == .some(.rexNotLast))
        #expect(refusal("66 e8 00000000") == .some(.operandSizeOnNearBranch))
        #expect(refusal("66 eb 00") == .some(.operandSizeOnNearBranch))
        #expect(refusal("66 c3") == .some(.operandSizeOnNearBranch))
        #expect(refusal("66 ff d0") == .some(.operandSizeOnNearBranch))
        #expect(refusal("66 66 48 e8 00000000") == .some(nil))    // REX.W fixes the size on both vendors
        #expect(refusal("48 ff 18") == .some(.rexWFarTransfer))
        #expect(refusal("48 ff 28") == .some(.rexWFarTransfer))
        #expect(refusal("ff 18") == .some(nil))
        #expect(refusal("48 0f b2 00") == .some(.rexWSegmentLoad))
        #expect(refusal("0f b4 00") == .some(nil))
    }

    /// Canonical encodings only (DESIGN §8): a VEX/EVEX/XOP bit the CPU ignores is refused, its
    /// canonical twin is not. NaCl refuses the same encodings (cases.tsv, causes h-vex-*).
    @Test func ignoredVectorBits() {
        func refusal(_ hex: String) -> Refusal?? {
            if case .instruction(let insn) = decode(hex) { return .some(insn.refusal) }
            return nil
        }
        // W on a WIG form (vaddss, vpaddb), L on a LIG form (vaddss).
        #expect(refusal("c4e1fa 58 c0") == .some(.ignoredVectorW))
        #expect(refusal("c4e17a 58 c0") == .some(nil))
        #expect(refusal("62f1fd08 fc c0") == .some(.ignoredVectorW))
        #expect(refusal("62f17d08 fc c0") == .some(nil))
        #expect(refusal("c5fe 58 c0") == .some(.ignoredVectorL))
        #expect(refusal("c5fa 58 c0") == .some(nil))
        #expect(refusal("62f17e28 58 c0") == .some(.ignoredVectorL))   // EVEX L'L = 1
        #expect(refusal("62f17e48 58 c0") == .some(.ignoredVectorL))   // EVEX L'L = 2
        #expect(refusal("62f17e38 58 c0") == .some(nil))               // EVEX.b on registers: L'L is rounding control
        // Not refused: W1 on vpmovmskb selects the database's r64 form (iced-x86's WIG32, w = 1), not an ignored W.
        #expect(refusal("c4e1f9 d7 c0") == .some(nil))
        // R (and EVEX R') where ModRM.reg is an opcode digit: vpsrlw /2, vzeroupper (no ModRM).
        #expect(refusal("c579 71 d0 00") == .some(.unusedVectorR))
        #expect(refusal("c5f9 71 d0 00") == .some(nil))
        #expect(refusal("62e17d08 71 d0 00") == .some(.unusedVectorR))
        #expect(refusal("62717d08 71 d0 00") == .some(.unusedVectorR))
        #expect(refusal("c46178 77") == .some(.unusedVectorR))
        #expect(refusal("c57a 58 c0") == .some(nil))                    // vaddss xmm8: R names a register
        // X without a SIB index; in EVEX it is the fifth bit of a vector ModRM.rm register, not of a GPR.
        #expect(refusal("c4a17a 58 c0") == .some(.unusedVectorX))
        #expect(refusal("c4a17a 58 05 00000000") == .some(.unusedVectorX))
        #expect(refusal("c4a17a 58 04 00") == .some(nil))               // [rax + r8]
        #expect(refusal("c4a17a 58 04 20") == .some(nil))               // [rax + r12]: index 100 with X
        #expect(refusal("62b17d08 fc c0") == .some(nil))                // vpaddb xmm0, xmm0, xmm16
        #expect(refusal("62b27d08 7c c0") == .some(.unusedVectorX))     // vpbroadcastd xmm0, eax
        #expect(refusal("8fa878 c2 ec 0e") == .some(.unusedVectorX))    // XOP vprotd, register form
        #expect(refusal("8fe878 c2 ec 0e") == .some(nil))
        // B without a base (RIP-relative, SIB without base) or a ModRM.rm register.
        #expect(refusal("c4c17a 58 05 00000000") == .some(.unusedVectorB))
        #expect(refusal("c4c17a 58 04 25 00000000") == .some(.unusedVectorB))
        #expect(refusal("c4c17a 58 00") == .some(nil))                  // [r8]
        #expect(refusal("c4c17a 58 c0") == .some(nil))                  // xmm8
        #expect(refusal("62d17d08 fc 05 00000000") == .some(.unusedVectorB))
        #expect(refusal("c4c178 77") == .some(.unusedVectorB))
        // imm8[3:0] beside an is4 register operand (vblendvps).
        #expect(refusal("c4e379 4a c0 1f") == .some(.ignoredIs4Bits))
        #expect(refusal("c4e379 4a c0 10") == .some(nil))
        // vvvv without a vvvv operand is #UD, not a refusal.
        #expect(decode("c5f0 77") == .invalid(.unusedVVVV))
        #expect(decode("c5b1 71 d0 00") != .invalid(.unusedVVVV))       // vpsrlw's vvvv is its destination
    }

    /// NaCl's verdicts (../shared/research/nacl-oracle/cases.tsv): every encoding it refuses for an
    /// ignored VEX bit (h-vex-ignored) the decoder refuses; of h-vex-other, all but the W1 forms the
    /// database lists as distinct (iced-x86's WIG32: vmovmskps r64, vpextrw r64, vpcmpestri64 ...)
    /// and NaCl's own gaps (vextractps r32). No encoding NaCl accepts becomes a canonical refusal.
    @Test func naclVectorCanonicalVerdicts() throws {
        let path = Fixture.sharedCorpus + "/../research/nacl-oracle/cases.tsv"
        guard let bytes = try? Fixture.bytes(atPath: path) else {
            Issue.record("missing \(path)")
            return
        }
        var refused: [String: Int] = [:], total: [String: Int] = [:], acceptedButRefused: [String] = []
        for line in String(decoding: bytes, as: UTF8.self).split(separator: "\n") where !line.hasPrefix("#") {
            let fields = line.split(separator: "\t").map(String.init)
            guard fields.count >= 4, let code = Hex.bytes(fields[0]) else { continue }
            var refusal: Refusal?
            if case .instruction(let insn) = Decoder.shared.decode(code + [UInt8](repeating: 0x90, count: 32 - code.count)) {
                refusal = insn.refusal
            }
            let canonical = refusal.map { Self.canonicalRefusals.contains($0) } ?? false
            if fields[1] == "0" && canonical { acceptedButRefused.append(fields[0]) }
            guard fields[1] == "1", fields[3].hasPrefix("h-vex") else { continue }
            total[fields[3], default: 0] += 1
            if refusal != nil { refused[fields[3], default: 0] += 1 }
        }
        #expect(total["h-vex-ignored"] == 7002 && refused["h-vex-ignored"] == 7002)
        #expect(total["h-vex-other"] == 996 && refused["h-vex-other"] == 887)
        #expect(acceptedButRefused.isEmpty, "NaCl accepts: \(acceptedButRefused.prefix(5))")
    }

    static let canonicalRefusals: [Refusal] = [.ignoredVectorW, .ignoredVectorL, .unusedVectorR, .unusedVectorX, .unusedVectorB,
                                               .ignoredIs4Bits]
}

@Suite struct DatabaseFileTests {
    /// The Swift embedding is the committed database file, byte for byte.
    @Test func embeddedDatabaseIsTheCommittedFile() throws {
        let path = Fixture.directory + "/../../../Sources/X86/Database/x86-64.isa"
        let file = String(decoding: try Fixture.bytes(atPath: path), as: UTF8.self)
        let same = file == ISADatabase.embeddedText
        #expect(same, "Sources/X86/ISADatabase+Generated.swift is not x86-64.isa: run Scripts/gen-isa.py")
    }

    @Test func loaderRejectsUnknownAttributes() {
        let line = ISADatabase.embeddedText.split(separator: "\n").first { !$0.hasPrefix("#") }!
        #expect(throws: ISADatabaseError.self) {
            try ISADatabase(text: String(line.replacingFirst("legacy", with: "legasy")))
        }
        #expect(throws: ISADatabaseError.self) {
            try ISADatabase(text: line.replacingFirst(" | ", with: " extra | "))
        }
        #expect((try? ISADatabase(text: String(line)))?.forms.count == 1)
    }
}

extension Substring {
    func replacingFirst(_ old: String, with new: String) -> String {
        var s = String(self)
        if let r = s.firstRange(of: old) { s.replaceSubrange(r, with: new) }
        return s
    }
}

@Suite struct PrefixFactsTests {
    func redundant(_ hex: String) -> [Int] {
        guard case .instruction(let insn) = Decoder.shared.decode(Hex.bytes(hex)!) else { return [-1] }
        return (0..<16).filter { insn.redundantPrefixes & (1 << $0) != 0 }
    }

    @Test func redundantPrefixes() {
        #expect(redundant("f3 a4") == [])                      // rep movsb
        #expect(redundant("f3 48 a4") == [1])                  // Reptar: REX.W does nothing to MOVSB
        #expect(redundant("f3 40 a4") == [1])
        #expect(redundant("66 66 66 2e 0f 1f 84 00 00 00 00 00") == [0, 1, 3])   // padding NOP
        #expect(redundant("48 01 c0") == [])                   // REX.W selects the 64-bit ADD
        #expect(redundant("40 88 e0") == [])                   // REX makes AH into SPL
        #expect(redundant("40 88 c0") == [0])
        #expect(redundant("41 50") == [])                      // push r8
        #expect(redundant("48 50") == [0])                     // push rax: 64-bit already
        #expect(redundant("f3 c3") == [0])                     // rep ret
        #expect(redundant("3e ff e0") == [])                   // notrack jmp rax
        #expect(redundant("64 8b 00") == [])                   // mov eax, fs:[rax]
        #expect(redundant("64 01 c0") == [0])
        #expect(redundant("67 8b 00") == [])
        #expect(redundant("67 01 c0") == [0])
        #expect(redundant("f2 f3 0f 10 c0") == [0])            // movss: the last of F2/F3 counts
        #expect(redundant("48 66 01 c0") == [0])               // an ignored REX
    }

    @Test func prefixesAreRecorded() {
        guard case .instruction(let insn) = Decoder.shared.decode(Hex.bytes("f0 66 41 0f b1 08")!) else {
            Issue.record("lock cmpxchg does not decode"); return
        }
        #expect(insn.prefixes.contains([.lock, .operandSize, .rex]))
        #expect(insn.prefixCount == 3)
        #expect(insn.rex == 0x41)
        #expect(Decoder.shared.form(of: insn).id == "cmpxchg_rm16_r16")
    }
}
