import ArgumentParser
import Policy

/// `--model nacl-x86-64|none`: the parser checks the name and lists the models in its error.
extension SandboxSettings.Model: ExpressibleByArgument {}

enum OutputFormat: String, ExpressibleByArgument, CaseIterable {
    case text, json
}

enum ListingFormat: String, ExpressibleByArgument, CaseIterable {
    case text, jsonl
}

/// Exit statuses of every command (DESIGN §11): never errno values.
enum ExitStatus {
    static let findings = ExitCode(1)
    static let trouble = ExitCode(2)
}

/// An input problem: printed as `sieve: error: ...`, exit status 2.
struct InputError: Error, CustomStringConvertible {
    let description: String
    init(_ message: String) { description = message }
}

/// Prints an input error the way every command does and turns it into exit status 2.
func failing<T>(_ body: () throws -> T) throws -> T {
    do { return try body() } catch let error as ExitCode { throw error } catch {
        var standardError = StandardError()
        print("sieve: error: \(error)", to: &standardError)
        throw ExitStatus.trouble
    }
}
