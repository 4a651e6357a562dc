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

            Exit status: 0 all accepted, 1 something refused, 2 error.
            """)

    @Option(name: .shortAndLong, help: "The policy file.")
    var policy: String

    @Argument(help: "ELF64 files, or raw code with --raw.")
    var files: [String]

    @Flag(help: "Treat the files as raw code.")
    var raw = false

    @Option(help: "Virtual address of the first byte of raw code (hex with 0x, or decimal).", transform: parseAddress)
    var base: UInt64 = 0

    @Option(help: "Override the policy's sandbox model: nacl-x86-64 or none.")
    var model: SandboxSettings.Model?

    @Option(help: "Output format: text or json.")
    var format: OutputFormat = .text

    func run() throws {
        let resolved = try loadPolicy(policy)
        let compiled = CompiledPolicy(resolved, model: model)
        let verifier = Verifier(compiled)
        let renderer = Renderer()
        var out = StandardOutput()
        var anyRefused = false
        var fileReports: [JSON] = []
        for file in files {
            let segments = try failing { try CodeInput.segments(of: file, raw: raw, base: base) }
            var findings: [JSON] = [], warnings: [JSON] = []
            var instructions = 0, bytes = 0, findingCount = 0, warningCount = 0
            for segment in segments {
                let report = segment.bytes.withUnsafeBytes { verifier.verify($0, base: segment.virtualAddress) }
                instructions += report.instructions
                bytes += report.bytes
                findingCount += report.findings.count
                warningCount += report.warnings.count
                for (list, isWarning) in [(report.findings, false), (report.warnings, true)] {
                    for finding in list {
                        let entry = describe(finding, segment, compiled, renderer)
                        if format == .json {
                            if isWarning { warnings.append(entry.json) } else { findings.append(entry.json) }
                        } else {
                            print(entry.text(file: file, warning: isWarning), to: &out)
                        }
                    }
                }
                anyRefused = anyRefused || !report.accepted
            }
            if format == .json {
                fileReports.append(.object([
                    "file": .string(file), "accepted": .bool(findings.isEmpty), "instructions": .int(instructions),
                    "bytes": .int(bytes), "findings": .array(findings), "warnings": .array(warnings),
                ]))
            } else {
                print("\(file): \(instructions) instructions, \(bytes) bytes: \(Self.summary(findingCount, warningCount))", to: &out)
            }
        }
        if format == .json {
            print(JSON.object([
                "schema": .int(1),
                "policy": .object(["name": .string(resolved.name), "file": .string(resolved.path),
                                   "hash": .string(compiled.contentHashHex)]),
                "model": .string(compiled.model.rawValue),
                "safety_proof": .bool(compiled.model != .none),
                "files": .array(fileReports),
            ]).compact, to: &out)
        } else if compiled.model == .none {
            print("model none: the instruction subset only; this is not a safety proof", to: &out)
        }
        out.flush()
        if anyRefused { throw ExitStatus.findings }
    }

    static func summary(_ findings: Int, _ warnings: Int) -> String {
        let verdict = findings == 0 ? "accepted" : "refused (\(findings) finding\(findings == 1 ? "" : "s"))"
        return warnings == 0 ? verdict : "\(verdict), \(warnings) warning\(warnings == 1 ? "" : "s")"
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
