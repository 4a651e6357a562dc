import ArgumentParser
import Disassembly
import Policy
import X86

struct ExplainCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "explain",
        abstract: "Say why a policy accepts or refuses an instruction: the deciding rule, file and line.",
        discussion: """
            INSTRUCTION is a form id (clflush_m8), a mnemonic (clflush, with the SDM's aliases: jz, \
            setc, sal, ...), or the hex bytes of one instruction ("0f ae 38", spaces allowed). For \
            bytes, the decoder judges first: bytes that are not an instruction, or that Sieve refuses \
            whatever the policy says, are not accepted, with the reason. Then the policy decides, \
            including its instance fields (operands, register, prefix, ...).

            explain judges one instruction: layout rules that need the surrounding code (bundles, \
            jump targets, sanctioned sequences) are the verifier's.

            Exit status: 0 accepted, 1 not accepted, 2 error.
            """)

    @Option(name: .shortAndLong, help: "The policy file.")
    var policy: String

    @Argument(help: "A form id, a mnemonic, or the hex bytes of one instruction.")
    var instruction: String

    @Option(help: "Output format: text or json.")
    var format: OutputFormat = .text

    func run() throws {
        let resolved = try loadPolicy(policy)
        let database = ISADatabase.shared
        let query = instruction.trimmingSpaces()
        let result: Explanation
        if let form = database[query.lowercased()] {
            result = .forms(query, [form])
        } else if let mnemonic = Mnemonics.canonical(query, in: database) {
            result = .forms(mnemonic, database.forms.filter { $0.mnemonic == mnemonic })
        } else if let bytes = Hex.bytes(query.lowercased().replacingPrefix("0x")), !bytes.isEmpty {
            result = .bytes(bytes)
        } else {
            var standardError = StandardError()
            let hint = Suggestion.closest(to: query.lowercased(), in: Mnemonics.all(in: database)).map { " (did you mean '\($0)'?)" } ?? ""
            print("sieve: error: '\(query)' is not a form id, a mnemonic or hex bytes\(hint)", to: &standardError)
            throw ExitStatus.trouble
        }
        var out = StandardOutput()
        let accepted = report(result, resolved, to: &out)
        out.flush()
        if !accepted { throw ExitStatus.findings }
    }

    enum Explanation {
        case forms(String, [Form])
        case bytes([UInt8])
    }

    private func report(_ explanation: Explanation, _ policy: ResolvedPolicy, to out: inout StandardOutput) -> Bool {
        switch explanation {
        case .forms(let name, let forms):
            let verdicts = forms.map { (form: $0, verdict: policy.accepted.verdict($0.index), rule: policy.accepted.decidingRule($0.index)) }
            let all = verdicts.allSatisfy { $0.verdict == .accepted }
            if format == .json {
                let first = verdicts[0]
                print(JSON.object([
                    "schema": .int(1), "input": .string(instruction), "accepted": .bool(all),
                    "mnemonic": .string(first.form.mnemonic), "form": .string(first.form.id),
                    "rule": ruleJSON(first.rule, in: policy),
                    "forms": .array(verdicts.map { v in
                        .object(["form": .string(v.form.id), "verdict": .string(v.verdict.rawValue),
                                 "accepted": .bool(v.verdict == .accepted), "rule": ruleJSON(v.rule, in: policy)])
                    }),
                ]).compact, to: &out)
            } else {
                print("\(name): \(forms.count) form\(forms.count == 1 ? "" : "s") under \(policy.name)", to: &out)
                for v in verdicts {
                    print("  \(v.form.id) (\(v.form.opcodeString)): \(v.verdict.rawValue)", to: &out)
                    describe(v.rule, policy, verdict: v.verdict, indent: "    ", to: &out)
                }
            }
            return all
        case .bytes(let bytes):
            switch Decoder.shared.decode(bytes) {
            case .invalid(let reason):
                if format == .json {
                    print(JSON.object(["schema": .int(1), "input": .string(instruction), "accepted": .bool(false),
                                       "invalid": .string(reason.rawValue)]).compact, to: &out)
                } else {
                    print("\(Hex.string(bytes)): not an instruction: \(reason.rawValue)", to: &out)
                }
                return false
            case .instruction(let insn):
                let form = Decoder.shared.form(of: insn)
                let trailing = bytes.count - insn.length
                let (accepted, rule) = insn.refusal == nil && trailing == 0 ? policy.decide(insn) : (false, nil)
                let text = bytes.withUnsafeBytes { Renderer().render(insn, bytes: UnsafeRawBufferPointer(rebasing: $0[0..<insn.length]), address: 0).text }
                if format == .json {
                    var fields: [String: JSON] = [
                        "schema": .int(1), "input": .string(instruction), "accepted": .bool(accepted),
                        "mnemonic": .string(form.mnemonic), "form": .string(form.id), "text": .string(text),
                        "length": .int(insn.length), "rule": ruleJSON(rule, in: policy),
                    ]
                    if let refusal = insn.refusal { fields["refused"] = .string(refusal.rawValue) }
                    if trailing != 0 { fields["invalid"] = .string("\(trailing) bytes after the instruction") }
                    print(JSON.object(fields).compact, to: &out)
                } else {
                    print("\(Hex.string(bytes[0..<insn.length])): \(text)  [\(form.id), \(form.opcodeString)]", to: &out)
                    if let refusal = insn.refusal {
                        print("  not accepted: the decoder refuses it: \(refusal.rawValue)", to: &out)
                    } else if trailing != 0 {
                        print("  not accepted: \(trailing) bytes follow the instruction; explain takes one instruction", to: &out)
                    } else {
                        print("  \(accepted ? "accepted" : "refused") under \(policy.name)", to: &out)
                        describe(rule, policy, verdict: accepted ? .accepted : .refused, indent: "  ", to: &out)
                    }
                }
                return accepted
            }
        }
    }

    private func describe(_ rule: Rule?, _ policy: ResolvedPolicy, verdict: AcceptedSet.Verdict, indent: String,
                          to out: inout StandardOutput) {
        guard let rule else {
            print("\(indent)no rule selects it: refused by default", to: &out)
            return
        }
        print("\(indent)\(rule.effect.rawValue) at \(rule.location)", to: &out)
        if let reason = rule.reason { print("\(indent)reason: \(reason)", to: &out) }
        if !rule.refs.isEmpty { print("\(indent)refs: \(rule.refs.joined(separator: ", "))", to: &out) }
        let chain = policy.chain(to: rule)
        if chain.count > 1 { print("\(indent)via: \(chain.joined(separator: " -> "))", to: &out) }
        if verdict == .partial { print("\(indent)some encodings are decided by later rules with instance fields", to: &out) }
    }
}

extension String {
    func trimmingSpaces() -> String {
        String(drop { $0 == " " }.reversed().drop { $0 == " " }.reversed())
    }

    func replacingPrefix(_ prefix: String) -> String {
        hasPrefix(prefix) ? String(dropFirst(prefix.count)) : self
    }
}
