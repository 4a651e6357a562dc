import Analysis
import ArgumentParser
import Policy
import Verifier
import X86

struct DiffCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "diff",
        abstract: "Compare what two policies accept: forms added and removed, sandbox rules, Turing-completeness.",
        discussion: """
            A semantic diff (never the YAML text): the forms B accepts and A refuses (added), those \
            A accepts and B refuses (removed), and those both accept in part or with different \
            encodings (changed: instance rules such as `prefix: rex` or `operands: memory`), grouped \
            by extension and mnemonic with counts (--forms lists them), judged as the verifier judges: \
            the policy and the sandbox model's deny list. Then the changed sandbox parameters and the \
            change in the Turing-completeness verdict.

            --no-new-access answers the reviewer's question "does B accept anything A does not?": \
            exit 0 when it does not, else 1 with what is new: added forms, encodings a changed form \
            now accepts (an example is shown when one is found; fail closed when none can be decided), \
            and looser sandbox parameters (model none, larger bundles, call alignment warn).

            Exit status: 0 same (or, with --no-new-access, nothing new), 1 different, 2 errors.
            """)

    @Argument(help: "The policy before (YAML).")
    var a: String

    @Argument(help: "The policy after (YAML).")
    var b: String

    @Option(help: "Output format: text, json or markdown.")
    var format: DiffFormat = .text

    @Flag(help: "List every form, not only counts per mnemonic.")
    var forms = false

    @Flag(name: .customLong("no-new-access"), help: "Exit 0 when B accepts nothing A does not, else 1 listing what is new.")
    var noNewAccess = false

    enum DiffFormat: String, ExpressibleByArgument, CaseIterable { case text, json, markdown }

    func run() throws {
        let policyA = try loadPolicy(a), policyB = try loadPolicy(b)
        let compiledA = CompiledPolicy(policyA), compiledB = CompiledPolicy(policyB)
        let diff = PolicyDiff(compiledA, compiledB)
        var out = StandardOutput()
        switch format {
        case .json: print(json(diff, compiledA, compiledB).compact, to: &out)
        case .text: for line in text(diff, compiledA, compiledB) { print(line, to: &out) }
        case .markdown: for line in markdown(diff, compiledA, compiledB) { print(line, to: &out) }
        }
        out.flush()
        if noNewAccess {
            let new = diff.newAccess
            if !new.forms.isEmpty || !new.sandbox.isEmpty { throw ExitStatus.findings }
        } else if !diff.same {
            throw ExitStatus.findings
        }
    }

    // MARK: - Grouping

    /// extension → mnemonic → changes, sorted.
    static func grouped(_ changes: [PolicyDiff.FormChange]) -> [(String, [(String, [PolicyDiff.FormChange])])] {
        let byExtension = Dictionary(grouping: changes) { $0.form.extensionName }
        return byExtension.keys.sorted().map { ext in
            let byMnemonic = Dictionary(grouping: byExtension[ext]!) { $0.form.mnemonic }
            return (ext, byMnemonic.keys.sorted().map { ($0, byMnemonic[$0]!) })
        }
    }

    static func describe(_ c: PolicyDiff.FormChange) -> String {
        var text = c.form.id
        if c.a != .refused && c.b != .refused { text += " (\(c.a.rawValue) -> \(c.b.rawValue))" }
        if let example = c.example { text += " e.g. \(Hex.string(example, separator: ""))" }
        return text
    }

    // MARK: - Text

    func text(_ diff: PolicyDiff, _ ca: CompiledPolicy, _ cb: CompiledPolicy) -> [String] {
        var lines = ["\(a) (\(ca.policy.name), \(ca.contentHashHex)) -> \(b) (\(cb.policy.name), \(cb.contentHashHex))"]
        for (title, changes) in [("added", diff.added), ("removed", diff.removed), ("changed", diff.changed)] {
            lines.append("\(title): \(changes.count) form\(changes.count == 1 ? "" : "s")")
            for (ext, mnemonics) in Self.grouped(changes) {
                let count = mnemonics.reduce(0) { $0 + $1.1.count }
                lines.append("  \(ext): \(count)")
                for (mnemonic, list) in mnemonics {
                    lines.append("    \(mnemonic): \(list.count)" + (forms || title == "changed" ? "  " + list.map(Self.describe).joined(separator: ", ") : ""))
                }
            }
        }
        if diff.sandbox.isEmpty { lines.append("sandbox: same") }
        for s in diff.sandbox { lines.append("sandbox: \(s.parameter) \(s.a) -> \(s.b)\(s.looser ? " (looser)" : "")") }
        lines.append("turing: \(diff.turing.a.rawValue) -> \(diff.turing.b.rawValue)")
        let new = diff.newAccess
        if new.forms.isEmpty && new.sandbox.isEmpty {
            lines.append("new access: none")
        } else {
            lines.append("new access: \(new.forms.count) form\(new.forms.count == 1 ? "" : "s")"
                         + (new.sandbox.isEmpty ? "" : ", sandbox " + new.sandbox.map(\.parameter).joined(separator: ", ")))
            if noNewAccess { for c in new.forms { lines.append("  \(Self.describe(c))") } }
        }
        return lines
    }

    // MARK: - JSON

    func json(_ diff: PolicyDiff, _ ca: CompiledPolicy, _ cb: CompiledPolicy) -> JSON {
        func side(_ path: String, _ c: CompiledPolicy) -> JSON {
            .object(["file": .string(path), "name": .string(c.policy.name), "hash": .string(c.contentHashHex),
                     "model": .string(c.model.rawValue), "bundle_size": .int(c.bundleSize), "call_alignment": .string(c.callAlignment.rawValue)])
        }
        func section(_ changes: [PolicyDiff.FormChange]) -> JSON {
            .object([
                "count": .int(changes.count),
                "by_extension": .array(Self.grouped(changes).map { ext, mnemonics in
                    .object(["extension": .string(ext), "count": .int(mnemonics.reduce(0) { $0 + $1.1.count }),
                             "mnemonics": .array(mnemonics.map { .object(["mnemonic": .string($0.0), "count": .int($0.1.count)]) })])
                }),
                "forms": .array(changes.map { c in
                    .object(["form": .string(c.form.id), "mnemonic": .string(c.form.mnemonic), "extension": .string(c.form.extensionName),
                             "a": .string(c.a.rawValue), "b": .string(c.b.rawValue),
                             "new_access": c.newAccess.map(JSON.bool) ?? .null,
                             "example": c.example.map { .string(Hex.string($0, separator: "")) } ?? .null])
                }),
            ])
        }
        let new = diff.newAccess
        return .object([
            "schema": .int(1),
            "a": side(a, ca), "b": side(b, cb),
            "same": .bool(diff.same),
            "added": section(diff.added), "removed": section(diff.removed), "changed": section(diff.changed),
            "sandbox": .array(diff.sandbox.map { .object(["parameter": .string($0.parameter), "a": .string($0.a), "b": .string($0.b),
                                                          "looser": .bool($0.looser)]) }),
            "turing": .object(["a": .string(diff.turing.a.rawValue), "b": .string(diff.turing.b.rawValue)]),
            "new_access": .object(["forms": .array(new.forms.map { .string($0.form.id) }),
                                   "sandbox": .array(new.sandbox.map { .string($0.parameter) })]),
        ])
    }

    // MARK: - Markdown

    func markdown(_ diff: PolicyDiff, _ ca: CompiledPolicy, _ cb: CompiledPolicy) -> [String] {
        var lines = ["## `\(a)` → `\(b)`", "",
                     "`\(ca.policy.name)` (\(ca.contentHashHex)) → `\(cb.policy.name)` (\(cb.contentHashHex))", "",
                     "| change | extension | mnemonic | forms |", "| --- | --- | --- | --- |"]
        for (title, changes) in [("added", diff.added), ("removed", diff.removed), ("changed", diff.changed)] {
            for (ext, mnemonics) in Self.grouped(changes) {
                for (mnemonic, list) in mnemonics {
                    let cell = forms || title == "changed" ? list.map { "`\(Self.describe($0))`" }.joined(separator: ", ") : String(list.count)
                    lines.append("| \(title) | \(ext) | \(mnemonic) | \(cell) |")
                }
            }
        }
        lines.append("")
        lines.append("Totals: \(diff.added.count) added, \(diff.removed.count) removed, \(diff.changed.count) changed.")
        for s in diff.sandbox { lines.append("Sandbox: `\(s.parameter)` \(s.a) → \(s.b)\(s.looser ? " (looser)" : "").") }
        lines.append("Turing-completeness: \(diff.turing.a.rawValue) → \(diff.turing.b.rawValue).")
        let new = diff.newAccess
        lines.append(new.forms.isEmpty && new.sandbox.isEmpty ? "New access: none." : "New access: \(new.forms.count) forms\(new.sandbox.isEmpty ? "" : ", looser sandbox").")
        return lines
    }
}
