import ArgumentParser

@main
struct Sieve: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sieve",
        abstract: "Policy-driven x86-64 instruction verifier for software sandboxes.",
        discussion: """
            Sieve decodes x86-64 machine code strictly, against a database of every instruction \
            form valid in 64-bit mode, and judges it against a YAML trust policy.

            Exit status: 0 success or accepted, 1 findings (refused code, policies differ), \
            2 usage or input error, including a file or standard output that cannot be written \
            (a closed pipe, as in `sieve isa | head`, ends the command quietly).
            """,
        version: SieveVersion.description,
        subcommands: [VerifyCommand.self, ScanCommand.self, BanCommand.self, PatchCommand.self, DiffCommand.self, GenerateCommand.self, BenchCommand.self, CheckCommand.self, ExplainCommand.self, MapCommand.self, ISACommand.self, DisasmCommand.self])

    /// swift-argument-parser ends usage errors with 64 (EX_USAGE); Sieve's contract is 2 for
    /// every usage or input error (DESIGN §11).
    static func main() {
        StandardStreams.checkAtExit()
        do {
            var command = try parseAsRoot()
            try command.run()
        } catch {
            if exitCode(for: error) == .validationFailure {
                var standardError = StandardError()
                print(fullMessage(for: error), to: &standardError)
                exit(withError: ExitStatus.trouble)
            }
            exit(withError: error)
        }
    }
}
