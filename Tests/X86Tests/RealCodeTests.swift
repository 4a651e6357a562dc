import CZydis
import Testing
@testable import X86

/// The decoder against Zydis on the code of real binaries of this machine: at every offset
/// of Sieve's linear sweep, both must agree on whether an instruction starts there (Sieve's
/// refused encodings count as instructions: a CPU executes them) and on its length.
@Suite struct RealCodeTests {
    static let binaries = [
        "/usr/lib/x86_64-linux-gnu/libcrypto.so.3",
        "/usr/lib/x86_64-linux-gnu/libstdc++.so.6",
        "/usr/lib/x86_64-linux-gnu/libc.so.6",
        "/usr/bin/python3.11",
        "/usr/lib/gcc/x86_64-linux-gnu/12/cc1",
        "/usr/lib/x86_64-linux-gnu/libSvtAv1Enc.so.1",
    ]

    struct Disagreement: Hashable {
        let bytes: String
        let sieve: String
        let zydis: String
    }

    struct Comparison {
        var agree = 0
        var disagreements: [Disagreement: Int] = [:]
        var total: Int { agree + disagreements.values.reduce(0, +) }
    }

    static func compare(_ code: [UInt8], decoder: Decoder = .shared) -> Comparison {
        var zydis = sieve_zydis()
        sieve_zydis_init(&zydis)
        var result = Comparison()
        code.withUnsafeBytes { buffer in
            let base = buffer.baseAddress!.assumingMemoryBound(to: UInt8.self)
            var offset = 0
            while offset < buffer.count {
                let theirs = Int(sieve_zydis_length(&zydis, base + offset, buffer.count - offset, nil))
                let ours: Int
                switch decoder.decode(buffer, at: offset) {
                case .instruction(let insn): ours = insn.length
                case .invalid: ours = 0
                }
                if ours == theirs {
                    result.agree += 1
                } else {
                    let shown = max(ours, theirs, 1)
                    let bytes = Hex.string(buffer[offset..<min(buffer.count, offset + shown)], separator: "")
                    let key = Disagreement(bytes: bytes, sieve: verdict(ours), zydis: verdict(theirs))
                    result.disagreements[key, default: 0] += 1
                }
                offset += max(ours, 1)
            }
        }
        return result
    }

    static func verdict(_ length: Int) -> String { length == 0 ? "invalid" : "length \(length)" }

    /// `Fixtures/zydis-disagreements.txt`: every disagreement that remains, with its reason.
    static func knownDisagreements() throws -> [Disagreement: String] {
        let text = try Fixture.text("zydis-disagreements.txt")
        var known: [Disagreement: String] = [:]
        for line in text.split(separator: "\n") where !line.hasPrefix("#") && !line.allSatisfy(\.isWhitespace) {
            let fields = line.split(separator: "|").map { $0.trimmingCharacters() }
            guard fields.count == 4 else { continue }
            known[Disagreement(bytes: fields[0], sieve: fields[1], zydis: fields[2])] = fields[3]
        }
        return known
    }

    @Test(arguments: binaries)
    func agreesWithZydis(path: String) throws {
        guard let file = try? Fixture.bytes(atPath: path) else {
            Issue.record("missing \(path): Scripts/bootstrap installs it")
            return
        }
        guard let text = try ELF.section(named: ".text", in: file) else {
            Issue.record("\(path) has no .text")
            return
        }
        let comparison = Self.compare(text.bytes)
        let known = try Self.knownDisagreements()
        let unexplained = comparison.disagreements.filter { known[$0.key] == nil }
        let rate = Double(comparison.agree) / Double(comparison.total)
        print("\(path): \(comparison.agree) of \(comparison.total) offsets agree with Zydis, \(comparison.total - comparison.agree) listed")
        #expect(comparison.total > 10_000)
        #expect(rate >= 0.9999, "\(path): \(comparison.agree) of \(comparison.total) agree")
        #expect(unexplained.isEmpty, """
            \(path): disagreements missing from Fixtures/zydis-disagreements.txt:
            \(unexplained.sorted { $0.value > $1.value }.prefix(40).map { "\($0.key.bytes) | \($0.key.sieve) | \($0.key.zydis) | ? (\($0.value)x)" }.joined(separator: "\n"))
            """)
    }
}
