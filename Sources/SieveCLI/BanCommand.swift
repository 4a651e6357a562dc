import Analysis
import ArgumentParser
import Codegen
import Disassembly
import Foundation
import Policy
import Verifier
import X86

struct BanCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ban",
        abstract: "Erratum response: record a ban in the policy, regenerate the verifier, re-check, and show what breaks.",
        discussion: """
            SELECTOR is a mnemonic (`clflush`) or selector fields as key=value (`mnemonic=movsb \
            prefix=rex`, `class=non-temporal`, `mnemonic=clflush,clflushopt`; the keys of a policy \
            selector, see policies/README.md: an unknown key is a usage error). The ban is appended \
            to POLICY's `ban:` list, with the reason and references as double-quoted YAML strings \
            (so no value can add a key), keeping the file's comments, order, formatting and line \
            endings (--dry-run prints the edit as a unified diff that `patch -p0` and `git apply` \
            accept from the working directory, and changes nothing). Then: the edited policy is \
            resolved and compiled, the C verifier regenerated into --out (replacing what is there), \
            the Turing-completeness check re-run, and every ELF file under each --corpus verified \
            before and after; the files and instruction sites the ban newly refuses are listed with \
            address, bytes and disassembly (every new site is counted; the first 10000 per file \
            are listed). Each step is timed.

            The corpus is verified under both policies before anything is written, and it fails \
            closed as `sieve scan` does: a damaged or unreadable file (or a path that is not an ELF \
            file) is an error and nothing is written, unless --skip-damaged leaves it out of the report.

            Every argument (--out, each --corpus) is checked before anything is written. The policy \
            is read, edited, checked and replaced under an exclusive lock (flock) on the file, so \
            concurrent bans on one policy run one after the other and none is lost. The policy and \
            the --out files are replaced whole or not at all: each is written to a temporary file \
            beside it, synced and renamed over it (a symbolic link is followed and kept; the mode \
            and owner stay); the --out files are put in place first, the policy last.

            A ban that would make a Turing-complete policy lose that verdict is refused, naming \
            the lost capabilities, unless --force.

            Exit status: 0 the ban is recorded (and the verifier regenerated), whatever the corpus \
            shows; 1 refused (Turing-completeness would be lost; nothing written); 2 errors (the \
            policy file is untouched, unless only printing the report after it failed).
            """)

    @Argument(help: "A mnemonic, or selector fields as key=value.")
    var selector: [String]

    @Option(name: .shortAndLong, help: "The policy file to edit (YAML).")
    var policy: String

    @Option(help: "Why: the erratum, in a line.")
    var reason: String

    @Option(name: .customLong("ref"), help: "A reference (CVE, erratum id); repeat for several.")
    var refs: [String] = []

    @Option(help: "A file or directory of ELF files to verify before and after; repeat for several.")
    var corpus: [String] = []

    @Option(help: "Regenerate the standalone C verifier into this folder (replaced).")
    var out: String?

    @Option(help: "Verify the corpus under this model instead of the policy's (none: ordinary binaries, no safety claim).")
    var model: SandboxSettings.Model?

    @Flag(help: "Record the ban even if the policy stops being Turing-complete.")
    var force = false

    @Flag(name: .customLong("dry-run"), help: "Print the edit as a diff; change nothing.")
    var dryRun = false

    @Flag(name: .customLong("skip-damaged"), help: "Leave damaged or unreadable corpus files out of the impact report instead of refusing the ban.")
    var skipDamaged = false

    func validate() throws {
        for token in selector {
            do { _ = try PolicyEdit.selectorField(token) } catch { throw ValidationError("\(error)") }
        }
    }

    func run() throws {
        var timings: [(String, Double)] = []
        func timed<T>(_ step: String, _ body: () throws -> T) rethrows -> T {
            let start = Clock.now()
            defer { timings.append((step, (Clock.now() - start) * 1000)) }
            return try body()
        }
        var stdout = StandardOutput()
        let fields = try failing { try selector.map(PolicyEdit.selectorField) }
        if dryRun {
            let original = try failing { try Self.text(try readFile(policy), policy) }
            let edited = try failing { try PolicyEdit.appendingBan(to: original, selector: fields, reason: reason, refs: refs) }
            print(PolicyEdit.diff(original, edited, path: policy), terminator: "", to: &stdout)
            stdout.flush()
            return
        }

        // Every argument is checked before anything is written.
        if let out { try failing { try checkCreatableDirectory(out) } }
        for path in corpus { try failing { try checkReadable(path) } }
        // The impact report fails closed, as scan does: a corpus file that cannot be judged is an
        // error (nothing is written), unless --skip-damaged.
        let inputs = CorpusScan.inputs(under: corpus)
        try refuseDamaged(inputs.unreadable)
        let corpusFiles = inputs.files
        if !corpus.isEmpty && corpusFiles.isEmpty { throw ValidationError("no ELF file under \(corpus.joined(separator: ", "))") }

        // Read, edit, check and replace under the policy's lock: a concurrent ban waits for this one
        // and then edits the file this one wrote. (The instruction database loads before, outside it.)
        _ = ISADatabase.shared
        let lock = try failing { try LockedFile(policy) }
        defer { lock.unlock() }
        let original = try failing { try Self.text(lock.contents, policy) }
        let edited = try failing { try PolicyEdit.appendingBan(to: original, selector: fields, reason: reason, refs: refs) }

        // The edit is resolved in memory, under the file's own path (errors point into it,
        // `extends` resolves beside it), and replaces the file only once it loads and keeps its verdict.
        let before = try timed("resolve") { try loadPolicy(policy, source: lock.contents) }
        let after = try timed("resolve edited") { try loadPolicy(policy, source: Array(edited.utf8)) }
        let (oldCompiled, newCompiled) = timed("compile") { (CompiledPolicy(before), CompiledPolicy(after)) }
        let (oldTuring, newTuring) = timed("turing") { (TuringChecker(oldCompiled).check(), TuringChecker(newCompiled).check()) }
        if oldTuring.verdict == .turingComplete && newTuring.verdict != .turingComplete && !force {
            var err = StandardError()
            print("sieve: refused: the ban makes \(after.name) \(newTuring.verdict.rawValue)"
                  + (newTuring.missing.isEmpty ? "" : ": no alternative gives \(newTuring.missing.joined(separator: ", "))")
                  + " (--force records it anyway)", to: &err)
            throw ExitStatus.findings
        }
        // The corpus is verified under both policies before anything is written.
        var scans: (old: [CorpusScan.FileResult], new: [CorpusScan.FileResult])?
        if !corpus.isEmpty {
            scans = timed("scan") {
                (CorpusScan.run(Verifier(model.map { CompiledPolicy(before, model: $0) } ?? oldCompiled), files: corpusFiles,
                                named: inputs.named, maxFindings: Self.listedSites),
                 CorpusScan.run(Verifier(model.map { CompiledPolicy(after, model: $0) } ?? newCompiled), files: corpusFiles,
                                named: inputs.named, maxFindings: Self.listedSites))
            }
            try refuseDamaged(scans!.new.filter { if case .failed = $0.status { true } else { false } })
        }
        // The regenerated verifier and the policy are staged whole, then put in place: the
        // verifier first, the policy last (any failure before leaves the policy as it was).
        let staged = StagedFiles()
        if let out {
            try timed("generate") {
                let files = try failing { try CVerifierGenerator(newCompiled).files() }
                try failing {
                    try makeDirectory(out)
                    for (name, text) in files { try staged.stage(text, as: out + "/" + name) }
                }
            }
        }
        try failing {
            try staged.stage(edited, as: lock.target)
            try staged.commit()
        }
        lock.unlock()
        print("recorded in \(policy):", to: &stdout)
        print(PolicyEdit.diff(original, edited, path: policy), terminator: "", to: &stdout)
        for (what, forms) in [("now refused", PolicyDiff.removedForms(oldCompiled, newCompiled)),
                              ("now refused in part", PolicyDiff.narrowedForms(oldCompiled, newCompiled))] where what == "now refused" || !forms.isEmpty {
            print("\(what): \(forms.count) form\(forms.count == 1 ? "" : "s")"
                  + (forms.isEmpty ? "" : ": " + forms.prefix(12).map(\.id).joined(separator: ", ") + (forms.count > 12 ? ", ..." : "")), to: &stdout)
        }
        print("turing: \(oldTuring.verdict.rawValue) -> \(newTuring.verdict.rawValue)" + (newTuring.model.map { " (\($0.rawValue))" } ?? ""), to: &stdout)

        if let out {
            print("regenerated \(out)/\(CVerifierGenerator.sourceName): hash \(newCompiled.contentHashHex)", to: &stdout)
        }

        if let (old, new) = scans {
            timed("compare") { report(old, new, to: &stdout) }
        }
        print("time: " + timings.map { "\($0.0) \(String(format3: $0.1)) ms" }.joined(separator: ", ")
              + ", total \(String(format3: timings.reduce(0) { $0 + $1.1 })) ms", to: &stdout)
        stdout.flush()
    }

    /// A policy's bytes as text: UTF-8 or an error (a replacement character would change the file).
    private static func text(_ bytes: [UInt8], _ path: String) throws -> String {
        guard let text = String(validating: bytes, as: UTF8.self) else { throw InputError("\(path) is not UTF-8 text") }
        return text
    }

    /// Sites listed per file in the impact report (every finding is counted).
    static let listedSites = 10_000

    /// Corpus files that could not be judged: an error, or left out with --skip-damaged.
    private func refuseDamaged(_ results: [CorpusScan.FileResult]) throws {
        guard !results.isEmpty else { return }
        var err = StandardError()
        for result in results { print("sieve: \(skipDamaged ? "skipped" : "error"): \(result.path): \(result.error ?? "cannot be verified")", to: &err) }
        if !skipDamaged {
            print("sieve: the corpus cannot be judged whole; nothing written (--skip-damaged leaves those files out)", to: &err)
            throw ExitStatus.trouble
        }
    }

    /// The files and sites the ban newly refuses.
    private func report(_ old: [CorpusScan.FileResult], _ new: [CorpusScan.FileResult], to out: inout StandardOutput) {
        let renderer = Renderer()
        var newlyRefusedFiles = 0, newSites = 0
        var lines: [String] = []
        for (before, after) in zip(old, new) where after.status == .verified {
            // A ban only adds findings: the difference of the counts is the number of new sites.
            // The listed sites are each file's first ones by offset, so the difference of the lists
            // holds only new sites (the first of them, when the lists are capped).
            let added = after.findings - before.findings
            guard added > 0 else { continue }
            struct Place: Hashable { let segment: String, offset: Int, kind: FindingKind }
            let known = Set(before.sites.map { Place(segment: $0.segment, offset: $0.offset, kind: $0.kind) })
            let fresh = after.sites.filter { !known.contains(Place(segment: $0.segment, offset: $0.offset, kind: $0.kind)) }
            if before.accepted { newlyRefusedFiles += 1 }
            newSites += added
            lines.append("  \(after.path): \(added) new site\(added == 1 ? "" : "s")" + (fresh.count < added ? " (the first \(fresh.count) listed)" : ""))
            for site in fresh {
                var text = site.message
                if case .instruction(let insn) = renderer.decoder.decode(site.bytes) {
                    text = site.bytes.withUnsafeBytes { renderer.render(insn, bytes: $0, address: site.address).text }
                }
                lines.append("    0x\(String(site.address, radix: 16)): \(Hex.string(site.bytes).padding(30))  \(text)  [\(site.kind.rawValue)]")
            }
        }
        let scanned = new.filter { $0.status == .verified }.count
        print("corpus: \(scanned) file\(scanned == 1 ? "" : "s"); \(newlyRefusedFiles) newly refused, \(newSites) new site\(newSites == 1 ? "" : "s")", to: &out)
        for line in lines { print(line, to: &out) }
    }
}
