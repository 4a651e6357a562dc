import Policy
import Verifier
import X86

/// Loads a policy for a command: errors go to standard error as `file:line:col` diagnostics
/// with the source line and a caret, and the command exits 2.
func loadPolicy(_ path: String, source: [UInt8]? = nil) throws -> ResolvedPolicy {
    do {
        return try PolicyLoader.load(path, source: source)
    } catch {
        var standardError = StandardError()
        printDiagnostics(error.diagnostics, sources: error.sources, to: &standardError)
        let count = error.diagnostics.filter { $0.severity == .error }.count
        print("sieve: \(count) error\(count == 1 ? "" : "s") in \(path)", to: &standardError)
        throw ExitStatus.trouble
    }
}

/// Prints a resolved policy's lint findings as `file:line:col` diagnostics, one by one, each
/// file's lines indexed once.
func printWarnings(_ resolved: ResolvedPolicy, to stream: inout some TextOutputStream) {
    var sources: [String: [UInt8]] = [:]
    for file in resolved.files where sources[file.path] == nil { sources[file.path] = file.source }
    printDiagnostics(resolved.warnings, sources: sources, to: &stream)
}

/// Diagnostics rendered one by one and written in 64 KiB pieces: memory stays bounded and the
/// stream is not written once per line.
func printDiagnostics(_ diagnostics: [Diagnostic], sources: [String: [UInt8]], to stream: inout some TextOutputStream) {
    var buffer = ""
    Diagnostic.render(diagnostics, sources: sources) { text in
        buffer += text + "\n"
        if buffer.utf8.count >= 1 << 16 {
            stream.write(buffer)
            buffer = ""
        }
    }
    if !buffer.isEmpty { stream.write(buffer) }
}

/// The policy a verdict is under, as `verify` and `scan` name it in JSON.
func policyJSON(_ policy: ResolvedPolicy, _ compiled: CompiledPolicy) -> JSON {
    .object(["name": .string(policy.name), "file": .string(policy.path), "hash": .string(compiled.contentHashHex)])
}

func ruleJSON(_ rule: Rule?, in policy: ResolvedPolicy) -> JSON {
    guard let rule else { return .null }
    return .object([
        "effect": .string(rule.effect.rawValue),
        "file": .string(rule.file),
        "line": .int(rule.mark.line),
        "column": .int(rule.mark.column),
        "reason": rule.reason.map(JSON.string) ?? .null,
        "refs": .array(rule.refs.map(JSON.string)),
        "chain": .array(policy.chain(to: rule).map(JSON.string)),
    ])
}

func diagnosticJSON(_ d: Diagnostic) -> JSON {
    .object([
        "severity": .string(d.severity.rawValue), "file": .string(d.file), "line": .int(d.mark.line),
        "column": .int(d.mark.column), "message": .string(d.message), "hint": d.hint.map(JSON.string) ?? .null,
    ])
}
