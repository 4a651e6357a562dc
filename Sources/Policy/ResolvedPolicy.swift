import X86

#if canImport(Glibc)
import Glibc
#endif

/// A policy with its `extends` chain read and its rules applied to every form: what it accepts.
///
/// Resolution (DESIGN §7): the inherited rules, then this file's `trust`, then its `allow`,
/// then its `ban`; the last rule that selects an encoding decides it, and an encoding no rule
/// selects is refused (default deny). So a child may re-`allow` what a parent banned, and a
/// `ban` always has the last word within its own file.
public struct ResolvedPolicy: Sendable {
    public let name: String
    public let description: String?
    /// The chain, the given file first and the root of its `extends` chain last.
    public let files: [PolicyFile]
    public let sandbox: SandboxSettings
    /// Every rule in precedence order: a later rule overrides an earlier one.
    public let rules: [Rule]
    public let groups: GroupCatalog
    public let accepted: AcceptedSet
    /// Lint findings (warnings): a ban without a reason, an unjustified sensitive trust, ...
    public let warnings: [Diagnostic]

    public var path: String { files[0].path }

    /// The `extends` chain from the given file to the one holding `rule`.
    public func chain(to rule: Rule) -> [String] {
        var out: [String] = []
        for file in files {
            out.append(file.path)
            if file.path == rule.file { break }
        }
        return out
    }

    /// Sandbox settings with the defaults filled in (NaCl's: 32-byte bundles, call alignment warns).
    public static let defaultSandbox = SandboxSettings(model: .naclX86_64, bundleSize: 32, callAlignment: .warn)
}

/// What a resolved policy decides for every form of the database.
public struct AcceptedSet: Sendable {
    /// A form's decision: the last rule that selects all of its encodings (none: refused by
    /// default), and the later rules that select only some of them, in precedence order.
    public struct FormDecision: Sendable {
        public let unconditional: Int?
        public let conditional: [Int]
    }

    public enum Verdict: String, Sendable { case accepted, refused, partial }

    public let decisions: [FormDecision]
    let rules: [Rule]

    public func verdict(_ formIndex: Int) -> Verdict {
        let d = decisions[formIndex]
        let base = d.unconditional.map { rules[$0].accepts } ?? false
        if d.conditional.isEmpty { return base ? .accepted : .refused }
        let outcomes = Set(d.conditional.map { rules[$0].accepts } + [base])
        return outcomes.count > 1 ? .partial : (base ? .accepted : .refused)
    }

    /// The rule that decides the form as a whole (nil: refused by default, nothing selects it).
    public func decidingRule(_ formIndex: Int) -> Rule? {
        decisions[formIndex].unconditional.map { rules[$0] }
    }

    /// Ids of the forms accepted (wholly or in part).
    public func acceptedForms(in database: ISADatabase = .shared) -> [Form] {
        database.forms.filter { verdict($0.index) != .refused }
    }
}

extension ResolvedPolicy {
    /// The verdict on one decoded instruction and the rule that decided it (nil rule: default deny).
    public func decide(_ insn: Instruction, decoder: Decoder = .shared) -> (accepted: Bool, rule: Rule?) {
        let (accepted, index) = decision(insn, decoder: decoder)
        return (accepted, index.map { rules[$0] })
    }

    /// The same verdict with the deciding rule's index in `rules`.
    public func decision(_ insn: Instruction, decoder: Decoder = .shared) -> (accepted: Bool, rule: Int?) {
        let form = decoder.form(of: insn)
        let decision = accepted.decisions[form.index]
        for index in decision.conditional.reversed() where rules[index].selector.matchesInstance(insn, form, decoder: decoder, groups: groups) {
            return (rules[index].accepts, index)
        }
        guard let index = decision.unconditional else { return (false, nil) }
        return (rules[index].accepts, index)
    }
}

/// The errors that stop a policy from loading, with the sources to show their lines.
public struct PolicyErrors: Error, Sendable {
    public let diagnostics: [Diagnostic]
    public let sources: [String: [UInt8]]

    public func rendered() -> String {
        diagnostics.map { $0.rendered(source: sources[$0.file]) }.joined(separator: "\n")
    }
}

public enum PolicyLoader {
    /// Reads `path` and its `extends` chain, checks it, and resolves it against the database.
    /// `source`, when given, stands for the contents of `path` itself (an edit not yet written:
    /// diagnostics still name `path`, and `extends` resolves beside it).
    public static func load(_ path: String, database: ISADatabase = .shared, source: [UInt8]? = nil) throws(PolicyErrors) -> ResolvedPolicy {
        var diagnostics: [Diagnostic] = []
        var sources: [String: [UInt8]] = [:]
        var files: [PolicyFile] = []
        var pendingGroups: [(String, String, SourceMark)] = []
        var seen: [String] = []
        var next: (path: String, from: (file: String, mark: SourceMark)?)? = (path, nil)

        while let (current, from) = next {
            next = nil
            let canonical = canonicalPath(current)
            if seen.contains(canonical) {
                let (file, mark) = from!
                diagnostics.append(Diagnostic(.error, file, mark, "'extends' makes a cycle: \((seen + [canonical]).map(display).joined(separator: " -> "))"))
                break
            }
            seen.append(canonical)
            guard let bytes = from == nil ? source ?? readFile(current) : readFile(current) else {
                if let (file, mark) = from {
                    diagnostics.append(Diagnostic(.error, file, mark, "cannot read '\(current)', named by 'extends'",
                                                  hint: "extends names a policy beside this file (standard) or a relative path"))
                } else {
                    diagnostics.append(Diagnostic(.error, current, SourceMark(line: 1, column: 1), "cannot read the policy file"))
                }
                break
            }
            sources[current] = bytes
            var reader = PolicyFileReader(path: current, database: database)
            let file = reader.read(bytes)
            diagnostics += reader.diagnostics
            pendingGroups += reader.pendingGroupReferences.map { (current, $0.0, $0.1) }
            guard let file else { break }
            files.append(file)
            if let (target, mark) = file.extends {
                next = (resolveExtends(target, from: current), (current, mark))
            }
        }
        guard diagnostics.allSatisfy({ $0.severity != .error }), !files.isEmpty else {
            throw PolicyErrors(diagnostics: diagnostics, sources: sources)
        }

        // Groups: the root's first, so that a child may redefine a parent's group.
        var groups = GroupCatalog(database: database)
        for file in files.reversed() {
            for group in file.groups { groups.define(group.name, group.selectors) }
        }
        for (file, name, mark) in pendingGroups where !groups.isKnown(name) {
            diagnostics.append(Diagnostic(.error, file, mark, "unknown group '\(name)'",
                                          hint: Suggestion.closest(to: name, in: groups.knownNames).map { "did you mean '\($0)'?" }
                                            ?? "see `sieve isa --groups`"))
        }
        diagnostics += groupCycles(files, groups)
        for file in files {
            for rule in file.trust {
                for name in rule.selector.groups ?? [] where groups.extensions.contains(GroupCatalog.extensionName(name)) {
                    groups.trustedExtensions.insert(GroupCatalog.extensionName(name))
                }
            }
        }
        guard diagnostics.allSatisfy({ $0.severity != .error }) else {
            throw PolicyErrors(diagnostics: diagnostics, sources: sources)
        }

        let rules = files.reversed().flatMap { $0.trust + $0.allow + $0.ban }
        let matches = RuleMatches(rules, groups, database)
        let accepted = resolve(rules, matches, groups)
        diagnostics += Lint.check(rules: rules, matches: matches, database: database)
        if diagnostics.contains(where: { $0.severity == .error }) {
            throw PolicyErrors(diagnostics: diagnostics, sources: sources)
        }
        let sandbox = files.reversed().reduce(ResolvedPolicy.defaultSandbox) { $0.overridden(by: $1.sandbox) }
        return ResolvedPolicy(name: files[0].name, description: files[0].description, files: files, sandbox: sandbox,
                              rules: rules, groups: groups, accepted: accepted, warnings: diagnostics)
    }

    static func resolve(_ rules: [Rule], _ matches: RuleMatches, _ groups: GroupCatalog) -> AcceptedSet {
        let conditionalRule = rules.map { isConditional($0.selector, groups) }
        var decisions: [AcceptedSet.FormDecision] = []
        decisions.reserveCapacity(matches.formCount)
        for form in 0..<matches.formCount {
            var unconditional: Int?
            var conditional: [Int] = []
            for index in rules.indices where matches.matches(rule: index, form: form) {
                if conditionalRule[index] {
                    conditional.append(index)
                } else {
                    unconditional = index
                    conditional.removeAll()
                }
            }
            decisions.append(AcceptedSet.FormDecision(unconditional: unconditional, conditional: conditional))
        }
        return AcceptedSet(decisions: decisions, rules: rules)
    }

    /// Whether a selector looks at instances (directly, or through a group that does).
    public static func isConditional(_ selector: Selector, _ groups: GroupCatalog, depth: Int = 0) -> Bool {
        if selector.hasInstanceFields { return true }
        guard depth < 16, let names = selector.groups else { return false }
        return names.contains { name in
            groups.user[name]?.contains { isConditional($0, groups, depth: depth + 1) } ?? false
        }
    }

    private static func groupCycles(_ files: [PolicyFile], _ groups: GroupCatalog) -> [Diagnostic] {
        var out: [Diagnostic] = []
        for file in files {
            for group in file.groups {
                var stack = [group.name], visited: Set<String> = []
                while let name = stack.popLast() {
                    for selector in groups.user[name] ?? [] {
                        for next in selector.groups ?? [] {
                            if next == group.name {
                                out.append(Diagnostic(.error, file.path, group.mark, "group '\(group.name)' contains itself (through '\(name)')"))
                                stack.removeAll()
                                break
                            }
                            if visited.insert(next).inserted { stack.append(next) }
                        }
                    }
                }
            }
        }
        return out
    }

    /// `extends: standard` is `standard.yaml` beside the file; a path is relative to the file's folder.
    static func resolveExtends(_ target: String, from file: String) -> String {
        let folder = file.lastIndex(of: "/").map { String(file[..<$0]) } ?? "."
        let name = target.contains("/") || target.hasSuffix(".yaml") || target.hasSuffix(".yml") ? target : target + ".yaml"
        return normalized(name.hasPrefix("/") ? name : folder + "/" + name)
    }

    /// `a/b/../c` as `a/c`, so that diagnostics name files as people write them.
    static func normalized(_ path: String) -> String {
        var parts: [Substring] = []
        for part in path.split(separator: "/", omittingEmptySubsequences: false) {
            if part == "." && !parts.isEmpty { continue }
            if part == "..", let last = parts.last, last != "..", last != "", last != "." { parts.removeLast(); continue }
            parts.append(part)
        }
        return parts.joined(separator: "/")
    }

    static func canonicalPath(_ path: String) -> String {
        guard let resolved = realpath(path, nil) else { return path }
        defer { free(resolved) }
        return String(cString: resolved)
    }

    static func display(_ path: String) -> String {
        path.split(separator: "/").last.map(String.init) ?? path
    }

    static func readFile(_ path: String) -> [UInt8]? {
        FileBytes.read(path, maximum: YAMLReader.maximumBytes)
    }
}

/// Which rules select which forms (at form level): one bit per (rule, form), computed once per
/// resolution and shared by the resolver and the lint.
struct RuleMatches {
    let formCount: Int
    private let words: Int
    private var bits: [UInt64]

    init(_ rules: [Rule], _ groups: GroupCatalog, _ database: ISADatabase) {
        formCount = database.forms.count
        words = (formCount + 63) / 64
        bits = [UInt64](repeating: 0, count: rules.count * words)
        // Group membership once per group, not once per rule and form.
        var members: [String: [Bool]] = [:]
        for rule in rules {
            for name in rule.selector.groups ?? [] {
                let key = (rule.selector.trusting ? "+" : "-") + name
                if members[key] == nil {
                    members[key] = groups.members(name, trusting: rule.selector.trusting, in: database)
                }
            }
        }
        for (r, rule) in rules.enumerated() {
            let groupMembers = (rule.selector.groups ?? []).map { members[(rule.selector.trusting ? "+" : "-") + $0]! }
            for form in database.forms {
                if !groupMembers.isEmpty && !groupMembers.contains(where: { $0[form.index] }) { continue }
                if rule.selector.matchesForm(form, groups: groups, checkingGroups: false) {
                    bits[r * words + form.index / 64] |= 1 << UInt64(form.index % 64)
                }
            }
        }
    }

    func matches(rule: Int, form: Int) -> Bool { bits[rule * words + form / 64] & (1 << UInt64(form % 64)) != 0 }

    func isEmpty(rule: Int) -> Bool { (0..<words).allSatisfy { bits[rule * words + $0] == 0 } }

    /// The first form both rules select, if any.
    func firstShared(_ a: Int, _ b: Int) -> Int? {
        for w in 0..<words {
            let both = bits[a * words + w] & bits[b * words + w]
            if both != 0 { return w * 64 + both.trailingZeroBitCount }
        }
        return nil
    }
}
