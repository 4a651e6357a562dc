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

            Prints a line per file, in path order as files complete: its instructions and bytes \
            of code, then accepted or its number of findings. Then the forms found most often \
            (all of them in JSON; every finding counts, listed or not), the totals, the time taken \
            and the number of workers. --sites lists the findings of each file, at most \
            --max-findings of them (default 1000; 0 lists none; there is no unlimited: the number \
            bounds the memory a scan holds); a file with more says how many it lists. Ordinary \
            binaries were never built for a sandbox: scan them with --model none, which checks the \
            instruction subset only and is not a safety proof.

            The scan fails closed. Files found in a directory that hold no x86-64 code (object \
            files without a LOAD segment, ELF32, other machines) are listed as skipped; files \
            without the ELF magic are not inputs. Everything that cannot be judged is an error, \
            listed with the reason: a damaged ELF file (truncated, header fields or segments \
            outside the file, segments that wrap past 2^64 or overlap), a file or directory that \
            cannot be read or listed, and a PATH named directly that is not a usable ELF file. \
            --skip-damaged lists those as skipped instead and lets the audit go on.

            Exit status: 0 every file verified accepted; 1 some file refused and every input \
            judged; 2 some input could not be judged (unless --skip-damaged), no file could be \
            verified at all, or a usage error (a PATH that does not exist, no ELF file under the PATHs).
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

    @Flag(help: "List the findings of each file: address, bytes, form and kind.")
    var sites = false

    @Option(help: "Findings listed per file with --sites (default \(CorpusScan.defaultMaxFindings); all are counted).")
    var maxFindings: Int = CorpusScan.defaultMaxFindings

    @Flag(help: "List damaged and unreadable inputs as skipped and go on: the exit status then reflects the verified files only.")
    var skipDamaged = false

    /// Forms listed in the text summary; JSON lists all.
    static let formsShown = 20

    func validate() throws {
        if maxFindings < 0 { throw ValidationError("--max-findings must be 0 or more") }
    }

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
        let inputs = CorpusScan.inputs(under: paths, limit: limit)
        if inputs.files.isEmpty && inputs.unreadable.isEmpty {
            try failing { throw InputError("no ELF file under \(paths.joined(separator: " "))") }
        }
        let workerCount = CorpusScan.workerCount(workers, files: inputs.files.count)
        let progressLine = ProgressLine.forTerminal()
        var progress: (@Sendable (Int, Int) -> Void)?
        if let progressLine { progress = { done, total in progressLine.show(done, total) } }

        // Results arrive in path order, one at a time, and are printed at once: nothing but the
        // totals and the per-form counts outlives its file.
        let report = Mutex(Report(self, compiled, unreadable: inputs.unreadable))
        report.withLock { $0.open() }
        CorpusScan.stream(verifier, files: inputs.files, named: inputs.named, maxFindings: sites ? maxFindings : 0,
                          workers: workerCount, progress: progress) { result in
            report.withLock { $0.take(result) }
        }
        progressLine?.clear()
        let seconds = Clock.now() - start
        let (totals, failed) = report.withLock { report in
            report.close(resolved: resolved, seconds: seconds, workers: workerCount)
            return (report.totals, report.failed)
        }
        if failed > 0 {
            var standardError = StandardError()
            print("sieve: error: \(counted(failed, "input")) could not be verified (listed above; --skip-damaged skips them)",
                  to: &standardError)
            throw ExitStatus.trouble
        }
        if totals.verified == 0 {
            var standardError = StandardError()
            print("sieve: error: no file could be verified", to: &standardError)
            throw ExitStatus.trouble
        }
        if totals.refused > 0 { throw ExitStatus.findings }
    }

    /// The report as it is written: a file at a time, then the summary.
    struct Report {
        let command: ScanCommand
        let compiled: CompiledPolicy
        /// Inputs the walk could not examine, merged into the files by path.
        var unreadable: ArraySlice<CorpusScan.FileResult>
        var out = StandardOutput()
        var totals = Totals()
        var forms: [String: Int] = [:]
        var fileCount = 0
        /// Inputs that could not be judged and are not skipped: exit status 2.
        var failed = 0

        init(_ command: ScanCommand, _ compiled: CompiledPolicy, unreadable: [CorpusScan.FileResult]) {
            self.command = command
            self.compiled = compiled
            self.unreadable = unreadable[...]
        }

        mutating func open() {
            // "files" sorts first among the document's keys: it opens the document.
            if command.format == .json { out.write("{\"files\":[") }
        }

        mutating func take(_ result: CorpusScan.FileResult) {
            while let first = unreadable.first, first.path < result.path {
                write(first)
                unreadable.removeFirst()
            }
            write(result)
        }

        private mutating func write(_ result: CorpusScan.FileResult) {
            var status = result.status
            if case .failed(let reason) = status {
                if command.skipDamaged { status = .skipped(reason) } else { failed += 1 }
            }
            totals.add(result, status)
            forms.merge(result.findingsByForm, uniquingKeysWith: +)
            switch command.format {
            case .json:
                if fileCount > 0 { out.write(",") }
                out.write(command.fileJSON(result, status, compiled).compact)
            case .text:
                command.printFile(result, status, to: &out)
            }
            fileCount += 1
        }

        mutating func close(resolved: ResolvedPolicy, seconds: Double, workers: Int) {
            for result in unreadable { write(result) }
            unreadable = []
            // A clock that did not move would make the rates infinite, and Int(_:) traps on that.
            let filesPerSecond = seconds > 0 ? Double(totals.files) / seconds : 0
            let mibPerSecond = seconds > 0 ? Double(totals.bytes) / 1_048_576 / seconds : 0
            let forms = CorpusScan.sortedCounts(forms)
            switch command.format {
            case .json:
                var object = JSONObjectStream(after: "files")
                out.write("]")
                out.write(object.member("files_per_second", .double(filesPerSecond)))
                out.write(object.member("forms", .array(forms.map { .object(["form": .string($0.form), "count": .int($0.count)]) })))
                out.write(object.member("max_findings", .int(command.maxFindings)))
                out.write(object.member("mib_per_second", .double(mibPerSecond)))
                out.write(object.member("model", .string(compiled.model.rawValue)))
                out.write(object.member("policy", policyJSON(resolved, compiled)))
                out.write(object.member("safety_proof", .bool(compiled.model != .none)))
                out.write(object.member("schema", .int(1)))
                out.write(object.member("seconds", .double(seconds)))
                out.write(object.member("totals", totals.json))
                out.write(object.member("workers", .int(workers)))
                out.write("}\n")
            case .text:
                if !forms.isEmpty {
                    let shown = forms.prefix(ScanCommand.formsShown)
                    print("forms found\(forms.count > shown.count ? " (top \(shown.count) of \(forms.count))" : ""):", to: &out)
                    let width = String(shown[0].count).count
                    for (form, count) in shown { print("  \(padded(String(count), width, right: true))  \(form)", to: &out) }
                }
                print(totals.text, to: &out)
                print("\(String(format3: seconds)) s, \(Int(filesPerSecond.rounded())) files/s, "
                      + "\(String(format3: mibPerSecond)) MiB/s, \(counted(workers, "worker"))", to: &out)
                if compiled.model == .none {
                    print("model none: the instruction subset only; this is not a safety proof", to: &out)
                }
            }
            out.flush()
        }
    }

    private func printFile(_ result: CorpusScan.FileResult, _ status: CorpusScan.FileResult.Status, to out: inout StandardOutput) {
        switch status {
        case .failed(let reason):
            print("\(result.path): error: \(reason)", to: &out)
            return
        case .skipped(let reason):
            print("\(result.path): skipped: \(reason)", to: &out)
            return
        case .verified: break
        }
        print("\(result.path): \(result.instructions) instructions, \(result.bytes) bytes: "
              + VerifyCommand.summary(result.findings, result.warnings, listed: sites ? result.sites.count : nil), to: &out)
        guard sites else { return }
        let forms = ISADatabase.shared.forms
        for site in result.sites {
            // Ten bytes hold nearly every instruction: the columns after them line up.
            print("    0x\(String(site.address, radix: 16))  \(padded(Hex.string(site.bytes), 29))  "
                  + "\(site.formIndex.map { forms[$0].id } ?? "-")  \(site.kind.rawValue)", to: &out)
        }
    }

    private func fileJSON(_ result: CorpusScan.FileResult, _ status: CorpusScan.FileResult.Status, _ compiled: CompiledPolicy) -> JSON {
        let statusName = switch status {
        case .verified: result.accepted ? "accepted" : "refused"
        case .skipped: "skipped"
        case .failed: "error"
        }
        var fields: [String: JSON] = [
            "path": .string(result.path), "accepted": .bool(result.accepted), "instructions": .int(result.instructions),
            "bytes": .int(result.bytes), "findings": .int(result.findings), "warnings": .int(result.warnings),
            "error": result.error.map(JSON.string) ?? .null, "status": .string(statusName),
        ]
        if sites {
            fields["sites"] = .array(result.sites.map { siteJSON($0, compiled) })
            fields["findings_truncated"] = .bool(result.sitesTruncated)
        }
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
        var files = 0, accepted = 0, refused = 0, skipped = 0, errors = 0
        var instructions = 0, bytes = 0, findings = 0, warnings = 0

        var verified: Int { accepted + refused }

        mutating func add(_ result: CorpusScan.FileResult, _ status: CorpusScan.FileResult.Status) {
            files += 1
            switch status {
            case .verified: if result.accepted { accepted += 1 } else { refused += 1 }
            case .skipped: skipped += 1
            case .failed: errors += 1
            }
            instructions += result.instructions
            bytes += result.bytes
            findings += result.findings
            warnings += result.warnings
        }

        var json: JSON {
            .object([
                "files": .int(files), "accepted": .int(accepted), "refused": .int(refused), "skipped": .int(skipped),
                "errors": .int(errors), "instructions": .int(instructions), "bytes": .int(bytes), "findings": .int(findings),
                "warnings": .int(warnings),
            ])
        }

        var text: String {
            "\(counted(files, "file")): \(accepted) accepted, \(refused) refused, \(skipped) skipped, \(counted(errors, "error")); "
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
/// terminal, and only while the results go elsewhere (results printed to the terminal as files
/// complete are their own progress, and would mix with it). In a pipe, a file or a CI log every
/// rewrite would be a line of noise.
private final class ProgressLine: Sendable {
    private let shown = Mutex<(done: Int, time: Double)>((0, 0))

    static func forTerminal() -> ProgressLine? {
        isatty(2) == 1 && isatty(1) == 0 && getenv("CI") == nil ? ProgressLine() : nil
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
