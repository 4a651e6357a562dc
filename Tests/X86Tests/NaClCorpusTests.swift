import Testing
@testable import X86

/// The real Native Client executables of ../shared/corpus/nacl: Sieve's decoder reads all of
/// their code, and finds the non-temporal instructions a NaCl-era toolchain emitted.
@Suite struct NaClCorpusTests {
    static let files = ["x64_hello_world.nexe", "x64_fib_array_v2.nexe"]

    @Test(arguments: files)
    func decodesTheWholeCode(name: String) throws {
        let path = Fixture.sharedCorpus + "/nacl/" + name
        guard let bytes = try? Fixture.bytes(atPath: path) else {
            Issue.record("missing \(path)")
            return
        }
        let segments = try ELF.executableSegments(bytes)
        #expect(segments.count == 1)
        var mnemonics: [String: Int] = [:]
        var invalid: [Int] = [], refused: [Int] = []
        for segment in segments {
            segment.bytes.withUnsafeBytes { code in
                var offset = 0
                while offset < code.count {
                    switch Decoder.shared.decode(code, at: offset) {
                    case .instruction(let insn):
                        mnemonics[Decoder.shared.form(of: insn).mnemonic, default: 0] += 1
                        if insn.refusal != nil { refused.append(offset) }
                        offset += insn.length
                    case .invalid:
                        invalid.append(offset)
                        offset += 1
                    }
                }
            }
        }
        #expect(invalid.isEmpty, "invalid bytes at \(invalid.prefix(10))")
        #expect(refused.isEmpty, "refused at \(refused.prefix(10))")
        #expect(mnemonics["movnti"] == 32)
        #expect(mnemonics["prefetchnta"] == 2)
    }
}
