import Analysis
import ArgumentParser
#if canImport(Glibc)
import Glibc
#endif
import Policy
import Synchronization
import Verifier
import X86

struct ScanCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "scan",
        abstract: "Verify every ELF file under some paths against one policy: which files it refuses, and where.",
        discussion: """
            Finds the ELF files under each PATH (directories recursively, not following symlinks \
            to directories; a file with several names is scanned once) and verifies their \
            executable segments against POLICY on --workers threads, one file at a time each. \
            This weighs a ban before it ships: scan the binaries the sandbox loads, and every \
            finding is a place the ban would break.

            Prints a line per file: its instructions and bytes of code, then accepted or its \
            number of findings; files that cannot be verified (object files without a LOAD \
            segment, ELF32, other machines) are skipped with the reason and do not change the \
            exit status. Then the forms found most often (all of them in JSON), the totals, the \
            time taken and the number of workers. --sites lists every finding: address, bytes, \
            form and kind. Ordinary binaries were never built for a sandbox: scan them with \
            --model none, which checks the instruction subset only and is not a safety proof.

            Exit status: 0 every scanned file accepted, 1 some file refused, 2 error (a PATH \
            that does not exist, no ELF file under the PATHs).
            """)

    @Option(name: .shortAndLong, help: "The policy file.")
    var policy: String

    @Argument(help: "ELF files, or directories to search for them.")
    var paths: [String]

    @Option(help: "Override the policy's sandbox model: nacl-x86-64 or none.")
    var model: SandboxSettings.Model?

    @Option(help: "Scan at most this many files (the first in sorted order).")
    var limit: Int?

    @Option(help: "Threads verifying files (default: one per processor).")
    var workers: Int?

    @Option(help: "Output format: text or json.")
    var format: OutputFormat = .text

    @Flag(help: "List every finding: address, bytes, form and kind.")
    var sites = false

    /// Forms listed in the text summary; JSON lists all.
    static let formsShown = 20

    func run() throws {
        // Input errors, printed as `sieve: error: ...`, exit 2.
        try failing {
            if let limit, limit < 1 { throw InputError("--limit must be at least 1") }
            if let workers, workers < 1 { throw InputError("--workers must be at least 1") }
            for path in paths {
                var status = stat()
                if stat(path, &status) != 0 { throw InputError("cannot read \(path): \(String(cString: strerror(errno)))") }
            }
        }
        let resolved = try loadPolicy(policy)
        let compiled = CompiledPolicy(resolved, model: model)
        let verifier = Verifier(compiled)

        let start = Clock.now()
        let files = CorpusScan.elfFiles(under: paths, limit: limit)
        if files.isEmpty { try failing { throw InputError("no ELF file under \(paths.joined(separator: " "))") } }
        let workerCount = CorpusScan.workerCount(workers, files: files.count)
        let progressLine = ProgressLine.forTerminal()
        var progress: (@Sendable (Int, Int) -> Void)?
        if let progressLine { progress = { done, total in progressLine.show(done, total) } }
        let results = CorpusScan.run(verifier, files: files, workers: workerCount, progress: progress)
        progressLine?.clear()
        let seconds = Clock.now() - start
        // A clock that did not move would make the rates infinite, and Int(_:) traps on that.
        let filesPerSecond = seconds > 0 ? Double(files.count) / seconds : 0

        let totals = Totals(results)
        let mibPerSecond = seconds > 0 ? Double(totals.bytes) / 1_048_576 / seconds : 0
        let forms = CorpusScan.formCounts(results)
        var out = StandardOutput()
        switch format {
        case .json:
            let fileEntries: [JSON] = results.map { fileJSON($0, compiled) }
            let formEntries: [JSON] = forms.map { .object(["form": .string($0.form), "count": .int($0.count)]) }
            let policyEntry: JSON = .object(["name": .string(resolved.name), "file": .string(resolved.path),
                                             "hash": .string(compiled.contentHashHex)])
            print(JSON.object([
                "schema": .int(1), "policy": policyEntry,
                "model": .string(compiled.model.rawValue), "safety_proof": .bool(compiled.model != .none),
                "files": .array(fileEntries), "forms": .array(formEntries), "totals": totals.json,
                "workers": .int(workerCount), "seconds": .double(seconds),
                "files_per_second": .double(filesPerSecond), "mib_per_second": .double(mibPerSecond),
            ]).compact, to: &out)
        case .text:
            for result in results { printFile(result, to: &out) }
            if !forms.isEmpty {
                let shown = forms.prefix(Self.formsShown)
                print("forms found\(forms.count > shown.count ? " (top \(shown.count) of \(forms.count))" : ""):", to: &out)
                let width = String(shown[0].count).count
                for (form, count) in shown { print("  \(padded(String(count), width, right: true))  \(form)", to: &out) }
            }
            print(totals.text, to: &out)
            print("\(String(format3: seconds)) s, \(Int(filesPerSecond.rounded())) files/s, "
                  + "\(String(format3: mibPerSecond)) MiB/s, \(counted(workerCount, "worker"))", to: &out)
            if compiled.model == .none {
                print("model none: the instruction subset only; this is not a safety proof", to: &out)
            }
        }
        out.flush()
        if totals.refused > 0 { throw ExitStatus.findings }
    }

    private func printFile(_ result: CorpusScan.FileResult, to out: inout StandardOutput) {
        if let error = result.error {
            print("\(result.path): skipped: \(error)", to: &out)
            return
        }
        print("\(result.path): \(result.instructions) instructions, \(result.bytes) bytes: "
              + VerifyCommand.summary(result.sites.count, result.warnings), to: &out)
        guard sites else { return }
        let forms = ISADatabase.shared.forms
        for site in result.sites {
            // Ten bytes hold nearly every instruction: the columns after them line up.
            print("    0x\(String(site.address, radix: 16))  \(padded(Hex.string(site.bytes), 29))  "
                  + "\(site.formIndex.map { forms[$0].id } ?? "-")  \(site.kind.rawValue)", to: &out)
        }
    }

    private func fileJSON(_ result: CorpusScan.FileResult, _ compiled: CompiledPolicy) -> JSON {
        var fields: [String: JSON] = [
            "path": .string(result.path), "accepted": .bool(result.accepted), "instructions": .int(result.instructions),
            "bytes": .int(result.bytes), "findings": .int(result.sites.count), "warnings": .int(result.warnings),
            "error": result.error.map(JSON.string) ?? .null,
        ]
        if sites { fields["sites"] = .array(result.sites.map { siteJSON($0, compiled) }) }
        return .object(fields)
    }

    private func siteJSON(_ site: CorpusScan.Site, _ compiled: CompiledPolicy) -> JSON {
        let form = site.formIndex.map { ISADatabase.shared.forms[$0] }
        return .object([
            "segment": .string(site.segment), "offset": .int(site.offset),
            "address": .int(Int(bitPattern: UInt(site.address))), "bytes": .string(Hex.string(site.bytes, separator: "")),
            "form": form.map { .string($0.id) } ?? .null, "mnemonic": form.map { .string($0.mnemonic) } ?? .null,
            "kind": .string(site.kind.rawValue), "message": .string(site.message),
            "rule": ruleJSON(site.ruleIndex.map { compiled.policy.rules[$0] }, in: compiled.policy),
        ])
    }

    /// What a scan found, over all files.
    struct Totals {
        var files = 0, accepted = 0, refused = 0, skipped = 0
        var instructions = 0, bytes = 0, findings = 0, warnings = 0

        init(_ results: [CorpusScan.FileResult]) {
            files = results.count
            for result in results {
                if result.error != nil { skipped += 1 } else if result.accepted { accepted += 1 } else { refused += 1 }
                instructions += result.instructions
                bytes += result.bytes
                findings += result.sites.count
                warnings += result.warnings
            }
        }

        var json: JSON {
            .object([
                "files": .int(files), "accepted": .int(accepted), "refused": .int(refused), "skipped": .int(skipped),
                "instructions": .int(instructions), "bytes": .int(bytes), "findings": .int(findings),
                "warnings": .int(warnings),
            ])
        }

        var text: String {
            "\(counted(files, "file")): \(accepted) accepted, \(refused) refused, \(skipped) skipped; "
                + "\(counted(instructions, "instruction")), \(String(format3: Double(bytes) / 1_048_576)) MiB of code; "
                + "\(counted(findings, "finding")), \(counted(warnings, "warning"))"
        }
    }
}

private func counted(_ count: Int, _ noun: String) -> String { "\(count) \(noun)\(count == 1 ? "" : "s")" }

private func padded(_ text: String, _ width: Int, right: Bool = false) -> String {
    let padding = String(repeating: " ", count: max(0, width - text.count))
    return right ? padding + text : text + padding
}

/// "scanned 123/4567 files" on standard error, rewritten in place: only for a person at a
/// terminal. In a pipe, a file or a CI log every rewrite would be a line of noise.
private final class ProgressLine: Sendable {
    private let shown = Mutex<(done: Int, time: Double)>((0, 0))

    static func forTerminal() -> ProgressLine? {
        isatty(2) == 1 && getenv("CI") == nil ? ProgressLine() : nil
    }

    /// Called by every worker as it finishes a file: workers finish out of order, and thousands
    /// of small files a second would flood the terminal, so only news, ten times a second.
    func show(_ done: Int, _ total: Int) {
        shown.withLock { last in
            let now = Clock.now()
            guard done > last.done, done == total || now - last.time >= 0.1 else { return }
            last = (done, now)
            writeAll("\rscanned \(done)/\(total) files", to: 2)
        }
    }

    func clear() { writeAll("\r\u{1B}[K", to: 2) }
}
