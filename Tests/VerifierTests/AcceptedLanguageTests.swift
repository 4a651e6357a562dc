import CZydis
import Foundation
import Testing
@testable import Policy
@testable import Verifier
import X86

/// NaCl's method: enumerate the accepted language of a policy (every accepted form × ModRM and
/// SIB classes × prefix combinations × displacement and immediate values) and check every
/// candidate Sieve accepts against an independent decoder (Zydis): same length, a valid
/// instruction. The test runs every 64th form; `Scripts/enumerate-accepted` runs them all.
enum AcceptedLanguage {
    static let prefixSets: [[UInt8]] = [[], [0x66], [0x67], [0xF2], [0xF3], [0xF0], [0x2E], [0x40], [0x41], [0x44], [0x48], [0x4C],
                                        [0x4F], [0x66, 0x48], [0xF3, 0x48], [0x66, 0x66], [0xF0, 0x66]]
    static let sibs: [UInt8] = [0x24, 0x25, 0x20, 0x04, 0x44, 0xBC, 0x3C, 0x05]
    static let fills: [UInt8] = [0x00, 0x7F, 0x80, 0xFF]

    struct Result {
        var candidates = 0
        var accepted = 0
        var disagreements: [String: String] = [:]
    }

    static func run(_ policy: ResolvedPolicy, stride: Int) -> Result {
        var zydis = sieve_zydis()
        sieve_zydis_init(&zydis)
        let decoder = Decoder.shared
        var result = Result()
        let forms = ISADatabase.shared.forms.filter { policy.accepted.verdict($0.index) != .refused }
        for (n, form) in forms.enumerated() where n % stride == 0 {
            guard case .instruction(let sample) = decoder.decode(form.sample) else { continue }
            let prefixEnd = sample.prefixCount
            let body = Array(form.sample[prefixEnd...])
            // The opcode bytes up to ModRM, and what follows ModRM/SIB/displacement.
            let modrmAt = sample.hasModRM ? Int(sample.modrmOffset) - prefixEnd : -1
            let tailAt = sample.immediateSize > 0 ? Int(sample.immediateOffset) - prefixEnd : body.count
            let tail = Array(body[min(tailAt, body.count)...])
            for prefixes in prefixSets {
                for fill in fills {
                    let immediate = tail.map { _ in fill }
                    if modrmAt < 0 {
                        check(prefixes + Array(body[..<tailAt]) + immediate, policy, decoder, &zydis, &result)
                        continue
                    }
                    let opcode = Array(body[..<modrmAt])
                    for modrm in 0...255 {
                        let mod = modrm >> 6, rm = modrm & 7
                        let displacement = mod == 1 ? 1 : (mod == 2 || (mod == 0 && rm == 5)) ? 4 : 0
                        let sibChoices: [UInt8?] = mod != 3 && rm == 4 ? sibs.map { $0 } : [nil]
                        for sib in sibChoices {
                            var bytes = prefixes + opcode + [UInt8(modrm)]
                            var disp = displacement
                            if let sib {
                                bytes.append(sib)
                                if mod == 0 && sib & 7 == 5 { disp = 4 }
                            }
                            bytes += [UInt8](repeating: fill, count: disp)
                            check(bytes + immediate, policy, decoder, &zydis, &result)
                        }
                    }
                }
            }
        }
        return result
    }

    static func check(_ bytes: [UInt8], _ policy: ResolvedPolicy, _ decoder: Decoder, _ zydis: inout sieve_zydis, _ result: inout Result) {
        result.candidates += 1
        let padded = bytes + [0x90, 0x90, 0x90, 0x90]
        guard case .instruction(let insn) = decoder.decode(padded), insn.refusal == nil, insn.length == bytes.count,
              policy.decide(insn, decoder: decoder).accepted else { return }
        result.accepted += 1
        let theirs = padded.withUnsafeBufferPointer { Int(sieve_zydis_length(&zydis, $0.baseAddress, $0.count, nil)) }
        if theirs != insn.length {
            let key = "\(decoder.form(of: insn).id) zydis \(theirs)"
            if result.disagreements[key] == nil { result.disagreements[key] = Hex.string(bytes, separator: "") }
        }
    }

    /// Forms whose accepted encodings Zydis 4.0 reads differently, and why.
    static let known: [String: String] = [:]
}

@Suite struct AcceptedLanguageTests {
    @Test(arguments: ["nacl.yaml", "standard.yaml"])
    func everyAcceptedEncodingAgreesWithZydis(_ name: String) throws {
        let stride = ProcessInfo.processInfo.environment["SIEVE_ENUMERATE_STRIDE"].flatMap(Int.init) ?? 64
        let result = AcceptedLanguage.run(try Repository.policy(name), stride: stride)
        print("\(name): \(result.candidates) candidates, \(result.accepted) accepted encodings checked against Zydis, \(result.disagreements.count) disagreeing forms")
        #expect(result.accepted > 10_000)
        let unexplained = result.disagreements.filter { AcceptedLanguage.known[$0.key] == nil }
        #expect(unexplained.isEmpty, "\(unexplained.count):\n\(unexplained.sorted { $0.key < $1.key }.prefix(30).map { "\($0.key): \($0.value)" }.joined(separator: "\n"))")
    }
}
