import ArgumentParser
import Codegen
import Policy
import Verifier

struct GenerateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "generate",
        abstract: "Write the standalone C verifier for a policy.",
        discussion: """
            Writes DIR/sieve_verifier.h and DIR/sieve_verifier.c: C99, no dependency beyond the C \
            library, the policy's decoder tables as static const arrays above a core that is the same \
            for every policy. The banner names the policy, its content hash and the instruction \
            database. The output is deterministic: the same policy gives the same bytes. Build it with
              cc -std=c99 -O2 -c DIR/sieve_verifier.c
            and call sieve_verify(code, size, base, report, ctx).

            Each file is replaced whole or not at all (written to a temporary file beside it, \
            synced, renamed over it), and neither is replaced unless both were written.

            Exit status: 0 written, 2 error (nothing replaced).
            """)

    @Option(name: .shortAndLong, help: "The policy file.")
    var policy: String

    @Option(name: .shortAndLong, help: "The folder to write (created if missing; the two files are replaced).")
    var output: String

    @Option(help: "Override the policy's sandbox model: nacl-x86-64 or none.")
    var model: SandboxSettings.Model?

    func run() throws {
        let resolved = try loadPolicy(policy)
        let compiled = CompiledPolicy(resolved, model: model)
        let files = try failing { try CVerifierGenerator(compiled).files() }
        try failing { try AtomicFile.write(files.map { ($0.0, Array($0.1.utf8)) }, into: output) }
        var out = StandardOutput()
        print("wrote \(output)/\(CVerifierGenerator.headerName) and \(CVerifierGenerator.sourceName): \(resolved.name), hash \(compiled.contentHashHex)", to: &out)
        out.flush()
    }
}
