import Codegen
import X86

/// What `sieve --version` prints: the release, the instruction database the decoder was
/// generated from, and the trusted core embedded in this binary (the same text `generate` writes).
enum SieveVersion {
    static let release = "0.5.0"

    static var description: String {
        "sieve \(release)\ndatabase \(ISADatabase.shared.version)\ncore \(CVerifierGenerator.coreHash)"
    }
}
