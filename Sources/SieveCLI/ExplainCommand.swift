import ArgumentParser
import Disassembly
import Policy
import Verifier
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
            including its instance fields (operands, register, prefix, ...), and then the sandbox \
            model: the bytes are run through the same core as `sieve verify --raw --base 0`, so the \
            verdict is verify's. A model rule that refuses the instruction itself (RET, an FS \
            override, a base outside %r15/%rsp/%rbp/%rip) is named; one that judges it by the code \
            around it (jump targets, the masked indirect branch, the index restriction, the \
            %rsp/%rbp and string sequences) is said to need that code.

            For a form id or a mnemonic, each form's policy verdict is given, and the model's \
            refusal when it refuses every instance of the form whatever the policy says.

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
        let verifier = Verifier(CompiledPolicy(resolved))
        let accepted = report(result, resolved, verifier, to: &out)
        out.flush()
        if !accepted { throw ExitStatus.findings }
    }

    enum Explanation {
        case forms(String, [Form])
        case bytes([UInt8])
    }

    private func report(_ explanation: Explanation, _ policy: ResolvedPolicy, _ verifier: Verifier,
                        to out: inout StandardOutput) -> Bool {
        switch explanation {
        case .forms(let name, let forms):
            let compiled = verifier.compiled
            let verdicts = forms.map { form in
                let plan = compiled.plans[form.index]
                return (form: form, verdict: policy.accepted.verdict(form.index), rule: policy.accepted.decidingRule(form.index),
                        model: plan.forbidden == 0 ? nil : compiled.refusals[Int(plan.forbidden) - 1])
            }
            let all = verdicts.allSatisfy { $0.verdict == .accepted && $0.model == nil }
            if format == .json {
                let first = verdicts[0]
                print(JSON.object([
                    "schema": .int(1), "input": .string(instruction), "accepted": .bool(all),
                    "mnemonic": .string(first.form.mnemonic), "form": .string(first.form.id),
                    "rule": ruleJSON(first.rule, in: policy),
                    "forms": .array(verdicts.map { v in
                        .object(["form": .string(v.form.id), "verdict": .string(v.verdict.rawValue),
                                 "accepted": .bool(v.verdict == .accepted && v.model == nil), "rule": ruleJSON(v.rule, in: policy),
                                 "model": v.model.map { .object(["kind": .string($0.kind.rawValue), "reason": .string($0.reason)]) } ?? .null])
                    }),
                ]).compact, to: &out)
            } else {
                print("\(name): \(forms.count) form\(forms.count == 1 ? "" : "s") under \(policy.name)", to: &out)
                for v in verdicts {
                    print("  \(v.form.id) (\(v.form.opcodeString)): \(v.model == nil ? v.verdict.rawValue : "refused")", to: &out)
                    describe(v.rule, policy, verdict: v.verdict, indent: "    ", to: &out)
                    if let refusal = v.model {
                        print("    the sandbox model refuses every instance: [\(refusal.kind.rawValue)] \(refusal.reason)", to: &out)
                    }
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
                let (policyAccepts, rule) = insn.refusal == nil && trailing == 0 ? policy.decide(insn) : (false, nil)
                // The model's verdict is the core's, on exactly these bytes: what verify says.
                let report = verifier.verify(Array(bytes[0..<insn.length]), base: 0)
                let model = report.findings.filter { $0.kind != .banned && $0.kind != .invalid }
                // A layout rule's finding needs the code around it when some sanctioned code around it
                // makes the core accept it; otherwise no code will (RET, `mov %rax,%rsp`, a branch into
                // its own bytes) and the model refuses the instruction itself.
                let layout = model.filter(\.kind.needsSurroundingCode), itself = model.filter { !$0.kind.needsSurroundingCode }
                let context = itself.isEmpty && !layout.isEmpty ? verifier.sanctionedContext(for: Array(bytes[0..<insn.length])) : nil
                func needsContext(_ finding: Finding) -> Bool { finding.kind.needsSurroundingCode && context != nil }
                let modelRefuses = !itself.isEmpty || (!layout.isEmpty && context == nil)
                // The reasons to name: the instruction-level rules, or the layout rules no code satisfies.
                let reasons = itself.isEmpty ? (context == nil ? layout : []) : itself
                let accepted = policyAccepts && !modelRefuses
                let text = bytes.withUnsafeBytes { Renderer().render(insn, bytes: UnsafeRawBufferPointer(rebasing: $0[0..<insn.length]), address: 0).text }
                if format == .json {
                    var fields: [String: JSON] = [
                        "schema": .int(1), "input": .string(instruction), "accepted": .bool(accepted),
                        "mnemonic": .string(form.mnemonic), "form": .string(form.id), "text": .string(text),
                        "length": .int(insn.length), "rule": ruleJSON(rule, in: policy), "policy_accepts": .bool(policyAccepts),
                        "accepted_alone": .bool(policyAccepts && report.accepted),
                        "context": context.map { .object(["before": .string(Hex.string($0.before, separator: "")),
                                                          "after": .string(Hex.string($0.after, separator: ""))]) } ?? .null,
                        "model": .array((model + report.warnings).map { finding in
                            .object(["kind": .string(finding.kind.rawValue), "message": .string(finding.message),
                                     "warning": .bool(report.warnings.contains(finding)),
                                     "needs_surrounding_code": .bool(needsContext(finding))])
                        }),
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
                        print("  \(accepted ? "accepted" : modelRefuses && policyAccepts ? "refused by the sandbox model" : "refused")"
                              + " under \(policy.name)", to: &out)
                        for finding in reasons {
                            print("  model \(verifier.compiled.model.rawValue): [\(finding.kind.rawValue)] \(finding.message)"
                                  + (finding.kind.needsSurroundingCode ? " (no sanctioned code around it helps)" : ""), to: &out)
                        }
                        if modelRefuses && policyAccepts { print("  the policy trusts it:", to: &out) }
                        describe(rule, policy, verdict: policyAccepts ? .accepted : .refused, indent: modelRefuses && policyAccepts ? "    " : "  ", to: &out)
                        for finding in model where needsContext(finding) {
                            print("  needs the code around it: [\(finding.kind.rawValue)] \(finding.message)", to: &out)
                        }
                        if let context, !modelRefuses {
                            let parts = [context.before, Array(bytes[0..<insn.length]), context.after].filter { !$0.isEmpty }
                            print("  the model accepts it in context (among one-byte NOPs): " + parts.map { Hex.string($0) }.joined(separator: " | "), to: &out)
                        }
                    }
                    for warning in report.warnings where insn.refusal == nil && trailing == 0 {
                        print("  warning: [\(warning.kind.rawValue)] \(warning.message)", to: &out)
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
