import Analysis
import ArgumentParser
import Disassembly
import Policy
import Verifier
import X86

struct VerifyCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "verify",
        abstract: "Verify machine code against a policy and its sandbox model.",
        discussion: """
            Checks every instruction of each FILE's executable segments (ELF64), or of raw code \
            with --raw, against POLICY: the decoder's strictness, the policy's bans, and the \
            sandbox model's rules (nacl-x86-64: bundles, masked indirect branches, %r15/%rsp/%rbp, \
            memory operands and index restriction, string sequences, jump targets).

            A finding has the offset (from the start of the segment), the address, the bytes, the \
            form, a rendering and a kind; a banned instruction names the policy rule, file and \
            line. Warnings (rules set to warn, such as NaCl's call alignment) are listed apart.
            Model `none` (--model none) checks the instruction subset only: it is not a safety proof.

            With --threads N (default: one per processor) a large segment is cut into pieces of \
            whole bundles, verified on N threads, and joined: the direct jumps between pieces are \
            judged against the whole, and the findings are the same, in the same order, as on one.

            Findings are written as the verifier reports them (its sweep in offset order, then the \
            direct jumps whose targets it checks once every instruction start is known), at most \
            --max-findings per file (default 1000; 0 lists none), and as many warnings; every \
            finding is counted, and a file with more says so: "refused (83211 findings, the first \
            1000 listed)"; in JSON, "findings_total" and "findings_truncated" (and the same for \
            warnings) beside the lists, and "max_findings" at the top. There is no unlimited: the \
            number bounds the output (memory does not grow with the findings either way). The JSON \
            document is written as it goes, keys still sorted: a file's findings as they are \
            found, its warnings (at most --max-findings) after them.

            An ELF file is refused as an input error (named, with the segment and its fields) when \
            it is truncated, a header or segment lies outside the file or overflows, an executable \
            segment's addresses wrap past 2^64, or two executable segments overlap in memory or \
            share file bytes. --base applies to raw code only: an ELF file's segments carry their \
            own addresses. A FILE that cannot be verified is reported on standard error (and in \
            JSON with its "error"), and the other FILEs are still verified.

            Exit status: 0 all accepted, 1 something refused, 2 a FILE could not be verified, or \
            another error.
            """)

    @Option(name: .shortAndLong, help: "The policy file.")
    var policy: String

    @Argument(help: "ELF64 files, or raw code with --raw.")
    var files: [String]

    @Flag(help: "Treat the files as raw code.")
    var raw = false

    @Option(help: "With --raw: virtual address of the first byte (hex with 0x, or decimal; default 0).", transform: parseAddress)
    var base: UInt64?

    @Option(help: "Override the policy's sandbox model: nacl-x86-64 or none.")
    var model: SandboxSettings.Model?

    @Option(help: "Output format: text or json.")
    var format: OutputFormat = .text

    @Option(help: "Findings (and warnings) listed per file (default \(Self.defaultMaxFindings)); all are counted.")
    var maxFindings: Int = Self.defaultMaxFindings

    static let defaultMaxFindings = 1000

    @Option(help: "Threads per file: a large segment is verified in pieces of whole bundles, joined with the same findings in the same order (default: one per processor).")
    var threads: Int?

    func validate() throws {
        if base != nil && !raw {
            throw ValidationError("--base applies to raw code (--raw): an ELF file's segments carry their own addresses")
        }
        if maxFindings < 0 { throw ValidationError("--max-findings must be 0 or more") }
        if let threads, threads < 1 { throw ValidationError("--threads must be at least 1") }
    }

    func run() throws {
        let resolved = try loadPolicy(policy)
        let compiled = CompiledPolicy(resolved, model: model)
        let verifier = Verifier(compiled)
        let renderer = Renderer()
        var out = StandardOutput()
        var anyRefused = false, anyUnverified = false
        // "files" sorts first among the document's keys: it opens the document.
        if format == .json { out.write("{\"files\":[") }
        for (number, file) in files.enumerated() {
            if format == .json && number > 0 { out.write(",") }
            let segments: [CodeSegment]
            do { segments = try CodeInput.segments(of: file, raw: raw, base: base ?? 0) } catch {
                var standardError = StandardError()
                print("sieve: error: \(error)", to: &standardError)
                anyUnverified = true
                if format == .json {
                    var writer = FileWriter(file: file, bytes: 0, json: true)
                    writer.finish(instructions: 0, error: "\(error)", to: &out)
                }
                continue
            }
            var writer = FileWriter(file: file, bytes: segments.reduce(0) { $0 + $1.bytes.count }, json: format == .json)
            var instructions = 0
            for segment in segments {
                let room = max(maxFindings - writer.listedFindings, maxFindings - writer.listedWarnings)
                let counts = segment.bytes.withUnsafeBytes { code in
                    verifier.verify(code, base: segment.virtualAddress, maxFindings: room, threads: threads ?? CorpusScan.processors) { finding, isWarning in
                        if isWarning ? writer.listedWarnings >= maxFindings : writer.listedFindings >= maxFindings { return }
                        writer.take(describe(finding, segment, compiled, renderer), isWarning: isWarning, to: &out)
                    }
                }
                instructions += counts.instructions
                writer.findings += counts.findings
                writer.warnings += counts.warnings
            }
            anyRefused = anyRefused || writer.findings > 0
            writer.finish(instructions: instructions, error: nil, to: &out)
        }
        if format == .json {
            var object = JSONObjectStream(after: "files")
            out.write("]")
            out.write(object.member("max_findings", .int(maxFindings)))
            out.write(object.member("model", .string(compiled.model.rawValue)))
            out.write(object.member("policy", policyJSON(resolved, compiled)))
            out.write(object.member("safety_proof", .bool(compiled.model != .none)))
            out.write(object.member("schema", .int(1)))
            out.write("}\n")
        } else if compiled.model == .none {
            print("model none: the instruction subset only; this is not a safety proof", to: &out)
        }
        out.flush()
        if anyUnverified { throw ExitStatus.trouble }
        if anyRefused { throw ExitStatus.findings }
    }

    /// One file's report as its findings arrive. Text: each finding and warning on its lines at
    /// once, the summary last. JSON: the file's object, keys sorted as JSON.compact writes them;
    /// "accepted" comes first, so the object opens at the first finding (which decides it) or at
    /// the end, and warnings, whose key sorts after "instructions", wait (at most the cap of them).
    struct FileWriter {
        let file: String
        let bytes: Int
        let json: Bool
        var findings = 0, warnings = 0
        var listedFindings = 0, listedWarnings = 0
        private var object: JSONObjectStream?
        private var heldWarnings: [String] = []

        init(file: String, bytes: Int, json: Bool) {
            self.file = file
            self.bytes = bytes
            self.json = json
        }

        mutating func take(_ entry: Entry, isWarning: Bool, to out: inout StandardOutput) {
            if isWarning { listedWarnings += 1 } else { listedFindings += 1 }
            guard json else { return print(entry.text(file: file, warning: isWarning), to: &out) }
            if isWarning { return heldWarnings.append(entry.json.compact) }
            if object == nil { open(accepted: false, error: nil, to: &out) } else { out.write(",") }
            out.write(entry.json.compact)
        }

        private mutating func open(accepted: Bool, error: String?, to out: inout StandardOutput) {
            var object = JSONObjectStream()
            out.write("{")
            out.write(object.member("accepted", .bool(accepted)))
            out.write(object.member("bytes", .int(bytes)))
            out.write(object.member("error", error.map(JSON.string) ?? .null))
            out.write(object.member("file", .string(file)))
            out.write(object.key("findings") + "[")
            self.object = object
        }

        mutating func finish(instructions: Int, error: String?, to out: inout StandardOutput) {
            guard json else {
                return print("\(file): \(instructions) instructions, \(bytes) bytes: "
                             + VerifyCommand.summary(findings, warnings, listed: listedFindings, listedWarnings: listedWarnings), to: &out)
            }
            if object == nil { open(accepted: findings == 0 && error == nil, error: error, to: &out) }
            out.write("]")
            out.write(object!.member("findings_total", .int(findings)))
            out.write(object!.member("findings_truncated", .bool(findings > listedFindings)))
            out.write(object!.member("instructions", .int(instructions)))
            out.write(object!.key("warnings") + "[" + heldWarnings.joined(separator: ",") + "]")
            out.write(object!.member("warnings_total", .int(warnings)))
            out.write(object!.member("warnings_truncated", .bool(warnings > listedWarnings)))
            out.write("}")
            heldWarnings = []
        }
    }

    /// "accepted", or "refused (N findings)", then the warnings; a count above what was listed
    /// (`listed`, nil: nothing is listed) says how many were.
    static func summary(_ findings: Int, _ warnings: Int, listed: Int? = nil, listedWarnings: Int? = nil) -> String {
        func listing(_ count: Int, _ listed: Int?) -> String? {
            guard let listed, listed < count else { return nil }
            return listed == 0 ? "none listed" : "the first \(listed) listed"
        }
        let s = findings == 1 ? "" : "s"
        let verdict = findings == 0 ? "accepted"
            : "refused (\(findings) finding\(s)\(listing(findings, listed).map { ", " + $0 } ?? ""))"
        guard warnings > 0 else { return verdict }
        return "\(verdict), \(warnings) warning\(warnings == 1 ? "" : "s")\(listing(warnings, listedWarnings).map { " (\($0))" } ?? "")"
    }

    struct Entry {
        let json: JSON
        let address: UInt64
        let kind: String
        let message: String
        let bytes: String
        let rendering: String
        let rule: Rule?

        func text(file: String, warning: Bool) -> String {
            var line = "\(file):0x\(String(address, radix: 16)): \(warning ? "warning" : "error"): [\(kind)] \(message)"
            if !bytes.isEmpty { line += "\n    \(bytes)    \(rendering)" }
            if let rule {
                line += "\n    \(rule.effect.rawValue) at \(rule.location)"
                if let reason = rule.reason { line += ": \(reason)" }
                if !rule.refs.isEmpty { line += " [\(rule.refs.joined(separator: ", "))]" }
            }
            return line
        }
    }

    private func describe(_ finding: Finding, _ segment: CodeSegment, _ compiled: CompiledPolicy, _ renderer: Renderer) -> Entry {
        let address = segment.virtualAddress &+ UInt64(finding.offset)
        let end = min(segment.bytes.count, finding.offset + max(finding.length, 0))
        let bytes = Array(segment.bytes[finding.offset..<end])
        var rendering = "", mnemonic: JSON = .null, formID: JSON = .null
        if let index = finding.formIndex, case .instruction(let insn) = renderer.decoder.decode(bytes) {
            let form = ISADatabase.shared.forms[index]
            rendering = bytes.withUnsafeBytes { renderer.render(insn, bytes: $0, address: address).text } + "  (\(form.id))"
            mnemonic = .string(form.mnemonic)
            formID = .string(form.id)
        }
        let rule = finding.ruleIndex.map { compiled.policy.rules[$0] }
        let json = JSON.object([
            "offset": .int(finding.offset), "address": .int(Int(bitPattern: UInt(address))), "kind": .string(finding.kind.rawValue),
            "mnemonic": mnemonic, "form": formID, "bytes": .string(Hex.string(bytes, separator: "")),
            "text": .string(rendering), "message": .string(finding.message), "rule": ruleJSON(rule, in: compiled.policy),
            "segment": .string(segment.name),
        ])
        return Entry(json: json, address: address, kind: finding.kind.rawValue, message: finding.message,
                     bytes: Hex.string(bytes), rendering: rendering, rule: rule)
    }
}
