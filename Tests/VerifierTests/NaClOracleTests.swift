import Foundation
import Testing
import Policy
import Verifier

/// NaCl's own validator as the oracle (`shared/research/nacl-oracle/`, see its README): every row of
/// `cases.tsv`, alone at offset 0 of a 32-byte bundle padded with 0x90, base 0, gets NaCl's verdict
/// under `policies/nacl-2015.yaml` (NaCl's validator as it stands today), or is a documented
/// exception from `Corpus/nacl-oracle-exceptions.txt` (NaCl's own bugs, Sieve's deliberate refusals).
@Suite struct NaClOracleTests {
    static let folder = (Repository.root as NSString).deletingLastPathComponent + "/shared/research/nacl-oracle"
    static let casesPath = folder + "/cases.tsv"
    static let present = FileManager.default.fileExists(atPath: casesPath)

    struct Row {
        let hex: String
        let naclAccepts: Bool
        let cause: String
    }

    static func rows() throws -> [Row] {
        try String(contentsOfFile: casesPath, encoding: .utf8).split(separator: "\n").compactMap { line in
            if line.hasPrefix("#") { return nil }
            let f = line.split(separator: "\t", omittingEmptySubsequences: false).map(String.init)
            guard f.count >= 4, let verdict = Int(f[1]) else { throw OracleError.badRow(String(line)) }
            return Row(hex: f[0], naclAccepts: verdict == 0, cause: f[3])
        }
    }

    enum OracleError: Error { case badRow(String), badHex(String), badException(String) }

    /// `Corpus/nacl-oracle-exceptions.txt`: `KEY<TAB>REASON`, KEY a cause id or one hex candidate.
    static func exceptions() throws -> [String: String] {
        var out: [String: String] = [:]
        for line in try String(contentsOfFile: Repository.corpus + "/nacl-oracle-exceptions.txt", encoding: .utf8)
            .split(separator: "\n") where !line.hasPrefix("#") && !line.allSatisfy(\.isWhitespace) {
            let f = line.split(separator: "\t", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
            guard f.count == 2, !f[1].isEmpty else { throw OracleError.badException(String(line)) }
            out[f[0]] = f[1]
        }
        return out
    }

    static func bytes(_ hex: String) throws -> [UInt8] {
        let chars = Array(hex.utf8)
        guard chars.count % 2 == 0, chars.count <= 64 else { throw OracleError.badHex(hex) }
        var out: [UInt8] = []
        for i in stride(from: 0, to: chars.count, by: 2) {
            guard let b = UInt8(String(decoding: chars[i ..< i + 2], as: UTF8.self), radix: 16) else { throw OracleError.badHex(hex) }
            out.append(b)
        }
        return out + [UInt8](repeating: 0x90, count: 32 - out.count)
    }

    @Test(.enabled(if: present, "shared/research/nacl-oracle/cases.tsv is not beside this checkout"))
    func nacl2015GivesNaClsVerdicts() throws {
        let verifier = Verifier(CompiledPolicy(try PolicyLoader.load(Repository.root + "/policies/nacl-2015.yaml")))
        let exceptions = try Self.exceptions()
        let rows = try Self.rows()
        #expect(rows.count > 15_000)

        var mismatches: [String: [Row]] = [:], excepted: [String: Int] = [:], total: [String: Int] = [:]
        for row in rows {
            total[row.cause, default: 0] += 1
            let accepted = verifier.verify(try Self.bytes(row.hex), base: 0).findings.isEmpty
            guard accepted != row.naclAccepts else { continue }
            if exceptions[row.hex] != nil || exceptions[row.cause] != nil {
                excepted[row.cause, default: 0] += 1
            } else {
                mismatches[row.cause, default: []].append(row)
            }
        }

        // Exceptions name only causes or candidates that exist, and only the documented kinds.
        let causes = Set(total.keys), hexes = Set(rows.map(\.hex))
        for key in exceptions.keys { #expect(causes.contains(key) || hexes.contains(key), "exception \(key) matches no row") }

        print("NaCl oracle under nacl-2015.yaml: \(rows.count) candidates")
        print("  cause                  rows  mismatch  exception  owner")
        for cause in total.keys.sorted() where mismatches[cause] != nil || excepted[cause] != nil {
            let owner = excepted[cause] != nil ? "documented exception" : "MISMATCH"
            print("  \(cause.padding(toLength: 22, withPad: " ", startingAt: 0)) \(String(total[cause]!).leftPad(5))"
                + "  \(String(mismatches[cause]?.count ?? 0).leftPad(8))  \(String(excepted[cause] ?? 0).leftPad(9))  \(owner)")
        }

        for (cause, rows) in mismatches.sorted(by: { $0.key < $1.key }) {
            let sample = rows.prefix(3).map { "\($0.hex) (NaCl \($0.naclAccepts ? "accepts" : "refuses"))" }.joined(separator: ", ")
            let message = Comment(rawValue: "\(cause): \(rows.count) mismatches, e.g. \(sample)")
            Issue.record(message)
        }
    }
}

private extension String {
    func leftPad(_ width: Int) -> String { String(repeating: " ", count: max(0, width - count)) + self }
}
