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
    /// Every `rewrite` in precedence order: for a form, the last one whose selector names it applies.
    public let rewrites: [RewriteRule]
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

    /// The `rewrite` rule that applies to a form (the last that names it), as an index in `rewrites`.
    public func rewrite(for form: Form) -> Int? {
        rewrites.lastIndex { $0.selector.matchesForm(form, groups: groups) }
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
        Diagnostic.rendered(diagnostics, sources: sources)
    }
}

public enum PolicyLoader {
    /// The longest `extends` chain, the given file included: each file may hold 1 MiB.
    public static let maximumChainLength = 64
    /// How deeply user groups may name each other (`a: [{group: b}]` is two levels).
    public static let maximumGroupDepth = 16
    /// Rules with instance fields are checked for each instruction, and the verifier's tables
    /// number them with 8 and 16 bits: at most this many such rules in a chain ...
    public static let maximumInstanceRules = 255
    /// ... and at most this many (rule, form) pairs in all (a rule with only instance fields,
    /// such as `{prefix: lock}`, applies to every form).
    public static let maximumInstancePairs = 65_535

    /// Reads `path` and its `extends` chain, checks it, and resolves it against the database.
    /// `source`, when given, stands for the contents of `path` itself (an edit not yet written:
    /// diagnostics still name `path`, and `extends` resolves beside it).
    public static func load(_ path: String, database: ISADatabase = .shared, source: [UInt8]? = nil) throws(PolicyErrors) -> ResolvedPolicy {
        var diagnostics: [Diagnostic] = []
        var sources: [String: [UInt8]] = [:]
        var files: [PolicyFile] = []
        var pendingGroups: [(String, String, SourceMark)] = []
        var seen: [String] = [], seenSet: Set<String> = []
        var next: (path: String, from: (file: String, mark: SourceMark)?)? = (path, nil)

        while let (current, from) = next {
            next = nil
            let canonical = canonicalPath(current)
            if seenSet.contains(canonical) {
                let (file, mark) = from!
                diagnostics.append(Diagnostic(.error, file, mark, "'extends' makes a cycle: \((seen + [canonical]).map(display).joined(separator: " -> "))"))
                break
            }
            if let (file, mark) = from, seen.count >= maximumChainLength {
                diagnostics.append(Diagnostic(.error, file, mark,
                    "the 'extends' chain is longer than \(maximumChainLength) files",
                    hint: "a policy extends at most \(maximumChainLength - 1) others, one after another"))
                break
            }
            seen.append(canonical)
            seenSet.insert(canonical)
            let bytes: [UInt8]
            if from == nil, let source {
                bytes = source
            } else {
                switch PolicySource.read(current) {
                case .success(let read): bytes = read
                case .failure(let failure):
                    if let (file, mark) = from {
                        diagnostics.append(Diagnostic(.error, file, mark, "cannot read '\(current)', named by 'extends': \(failure.reason)",
                                                      hint: "extends names a policy beside this file (standard) or a relative path"))
                    } else {
                        diagnostics.append(Diagnostic(.error, current, .wholeFile, "cannot read the policy file: \(failure.reason)"))
                    }
                    next = nil
                    continue
                }
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
        var knownNames: [String]?
        var budget = HintBudget(), hints: [String: String] = [:]
        for (file, name, mark) in pendingGroups where !groups.isKnown(name) {
            // One suggestion per misspelling, the known names listed once: a policy may repeat one.
            if hints[name] == nil {
                if knownNames == nil { knownNames = groups.knownNames }
                hints[name] = budget.closest(to: name, in: knownNames!).map { "did you mean '\($0)'?" } ?? "see `sieve isa --groups`"
            }
            diagnostics.append(Diagnostic(.error, file, mark, "unknown group '\(name)'", hint: hints[name]))
        }
        let groupsOK = diagnostics.allSatisfy { $0.severity != .error }
        diagnostics += analyzeGroups(files, &groups, computingMembers: groupsOK)
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
        diagnostics += instanceLimits(rules, accepted, groups)
        diagnostics += Lint.check(rules: rules, matches: matches, database: database)
        if diagnostics.contains(where: { $0.severity == .error }) {
            throw PolicyErrors(diagnostics: diagnostics, sources: sources)
        }
        let sandbox = files.reversed().reduce(ResolvedPolicy.defaultSandbox) { $0.overridden(by: $1.sandbox) }
        return ResolvedPolicy(name: files[0].name, description: files[0].description, files: files, sandbox: sandbox,
                              rules: rules, rewrites: files.reversed().flatMap(\.rewrites), groups: groups, accepted: accepted, warnings: diagnostics)
    }

    /// Each form's decision: the last rule that selects it wholly, and the later rules that
    /// select some of its encodings. Rules are walked from the last: once a rule selects a form
    /// wholly, earlier rules cannot change it, so a form is settled once and a selector that
    /// settled its forms is never walked again. Linear in the rules (each distinct selector's
    /// forms are visited once), however often a policy repeats a rule.
    static func resolve(_ rules: [Rule], _ matches: RuleMatches, _ groups: GroupCatalog) -> AcceptedSet {
        var unconditional = [Int?](repeating: nil, count: matches.formCount)
        var conditional = [[Int]](repeating: [], count: matches.formCount)
        var settled = FormSet(count: matches.formCount)
        var walked = Set<Int>()
        for index in rules.indices.reversed() {
            let set = matches.setOfRule[index]
            if isConditional(rules[index].selector, groups) {
                var open = matches.sets[set]
                open.subtract(settled)
                open.forEach { conditional[$0].append(index) }
            } else if walked.insert(set).inserted {
                var open = matches.sets[set]
                open.subtract(settled)
                open.forEach { unconditional[$0] = index }
                settled.formUnion(open)
            }
        }
        let decisions = (0..<matches.formCount).map {
            AcceptedSet.FormDecision(unconditional: unconditional[$0], conditional: conditional[$0].reversed())
        }
        return AcceptedSet(decisions: decisions, rules: rules)
    }

    /// Whether a selector looks at instances (directly, or through a group that does, however
    /// deeply nested: `GroupCatalog.conditionalUserGroups`).
    public static func isConditional(_ selector: Selector, _ groups: GroupCatalog) -> Bool {
        if selector.hasInstanceFields { return true }
        guard let names = selector.groups else { return false }
        return names.contains { groups.conditionalUserGroups.contains($0) }
    }

    /// The verifier checks rules with instance fields per instruction, from tables that number
    /// them with 8 and 16 bits: a policy that needs more is an error, not a crash.
    static func instanceLimits(_ rules: [Rule], _ accepted: AcceptedSet, _ groups: GroupCatalog) -> [Diagnostic] {
        var out: [Diagnostic] = []
        var count = 0
        for rule in rules where isConditional(rule.selector, groups) {
            count += 1
            if count == maximumInstanceRules + 1 {
                out.append(Diagnostic(.error, rule.file, rule.mark,
                    "more than \(maximumInstanceRules) rules with instance fields (operands, operand-size, vector-length, register, prefix)",
                    hint: "the verifier checks each of them per instruction; merge rules that differ only in their values"))
            }
        }
        var pairs = [Int](repeating: 0, count: rules.count), total = 0
        for decision in accepted.decisions {
            total += decision.conditional.count
            for index in decision.conditional { pairs[index] += 1 }
        }
        if total > maximumInstancePairs {
            // Blame the rules in order until the pairs left fit: the first ones written.
            var running = 0
            for (index, n) in pairs.enumerated() where n > 0 {
                running += n
                if running > maximumInstancePairs {
                    let rule = rules[index]
                    out.append(Diagnostic(.error, rule.file, rule.mark,
                        "rules with instance fields apply to \(total) (rule, form) pairs; at most \(maximumInstancePairs)",
                        hint: "narrow this rule with a mnemonic, extension or group: a rule with only instance fields applies to every form"))
                    break
                }
            }
        }
        return out
    }

    /// Checks the user groups, linearly in their number and references (iterative searches, no
    /// recursion, so no chain of groups can overflow the stack): a group may not contain itself
    /// nor nest deeper than `maximumGroupDepth`. Then computes once what each group selects and
    /// whether it looks at instances.
    static func analyzeGroups(_ files: [PolicyFile], _ groups: inout GroupCatalog, computingMembers: Bool) -> [Diagnostic] {
        let names = groups.user.keys.sorted()
        guard !names.isEmpty else { return [] }
        let id = Dictionary(uniqueKeysWithValues: names.enumerated().map { ($1, $0) })
        // Edges in the order the selectors name the groups.
        let edges: [[Int]] = names.map { name in
            groups.user[name]!.flatMap { ($0.groups ?? []).compactMap { id[$0] } }
        }
        let component = stronglyConnected(edges)
        var componentSize = [Int](repeating: 0, count: names.count)
        for c in component { componentSize[c] += 1 }
        // A group contains itself when it names itself, or shares a cycle with a group it names;
        // "through" is a group of that cycle that names it.
        var through = [Int?](repeating: nil, count: names.count)
        for (from, targets) in edges.enumerated() {
            for to in targets where component[from] == component[to] && (componentSize[component[to]] > 1 || from == to) {
                if from == to { through[to] = to } else if through[to] == nil { through[to] = from }
            }
        }
        var out: [Diagnostic] = []
        for file in files {
            for group in file.groups {
                guard let g = id[group.name], let via = through[g] else { continue }
                out.append(Diagnostic(.error, file.path, group.mark, "group '\(group.name)' contains itself (through '\(names[via])')"))
            }
        }
        guard out.isEmpty else { return out }

        // Depth, instance fields and members, children before parents.
        var depth = [Int](repeating: 0, count: names.count)
        var conditional = [Bool](repeating: false, count: names.count)
        var sets = SelectorSets(groups, groups.databaseIdentity)
        for g in postOrder(edges) {
            depth[g] = 1 + (edges[g].map { depth[$0] }.max() ?? 0)
            let selectors = groups.user[names[g]]!
            conditional[g] = selectors.contains(where: \.hasInstanceFields) || edges[g].contains { conditional[$0] }
            if computingMembers && depth[g] <= maximumGroupDepth {
                var members = FormSet(count: sets.formCount)
                for selector in selectors { members.formUnion(sets.forms(selector)) }
                sets.defineUserGroup(names[g], members)
            }
        }
        for file in files {
            for group in file.groups {
                guard let g = id[group.name], depth[g] == maximumGroupDepth + 1 else { continue }
                out.append(Diagnostic(.error, file.path, group.mark,
                    "group '\(group.name)' nests groups \(depth[g]) levels deep; at most \(maximumGroupDepth)",
                    hint: "name the selectors of the inner groups directly"))
            }
        }
        groups.conditionalUserGroups = Set(names.indices.filter { conditional[$0] }.map { names[$0] })
        if computingMembers && out.isEmpty { groups.userMembers = sets.userMembers }
        return out
    }

    /// Tarjan's strongly connected components, iteratively: the component of each vertex.
    static func stronglyConnected(_ edges: [[Int]]) -> [Int] {
        let n = edges.count
        var index = [Int](repeating: -1, count: n), low = [Int](repeating: 0, count: n)
        var onStack = [Bool](repeating: false, count: n), stack: [Int] = []
        var component = [Int](repeating: -1, count: n), components = 0, counter = 0
        for root in 0..<n where index[root] < 0 {
            var work: [(vertex: Int, edge: Int)] = [(root, 0)]
            index[root] = counter; low[root] = counter; counter += 1
            stack.append(root); onStack[root] = true
            while let (v, e) = work.last {
                if e < edges[v].count {
                    work[work.count - 1].edge += 1
                    let w = edges[v][e]
                    if index[w] < 0 {
                        index[w] = counter; low[w] = counter; counter += 1
                        stack.append(w); onStack[w] = true
                        work.append((w, 0))
                    } else if onStack[w] {
                        low[v] = min(low[v], index[w])
                    }
                    continue
                }
                work.removeLast()
                if let parent = work.last?.vertex { low[parent] = min(low[parent], low[v]) }
                if low[v] == index[v] {
                    while let w = stack.popLast() {
                        onStack[w] = false
                        component[w] = components
                        if w == v { break }
                    }
                    components += 1
                }
            }
        }
        return component
    }

    /// The vertices of an acyclic graph, each after every vertex it has an edge to.
    static func postOrder(_ edges: [[Int]]) -> [Int] {
        var out: [Int] = [], visited = [Bool](repeating: false, count: edges.count)
        for root in edges.indices where !visited[root] {
            visited[root] = true
            var work: [(vertex: Int, edge: Int)] = [(root, 0)]
            while let (v, e) = work.last {
                if e < edges[v].count {
                    work[work.count - 1].edge += 1
                    let w = edges[v][e]
                    if !visited[w] { visited[w] = true; work.append((w, 0)) }
                    continue
                }
                work.removeLast()
                out.append(v)
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
}

/// A policy file's bytes, or why they cannot be had: the system's reason (`No such file or
/// directory`), a directory or other non-file, or the file's real size when it is over the limit.
enum PolicySource {
    struct Failure: Error {
        let reason: String
    }

    static func read(_ path: String, maximum: Int = YAMLReader.maximumBytes) -> Result<[UInt8], Failure> {
        // O_NONBLOCK: opening a FIFO must not wait for a writer; it is refused below.
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)
        guard fd >= 0 else { return .failure(Failure(reason: errorText(errno))) }
        defer { close(fd) }
        var status = stat()
        guard fstat(fd, &status) == 0 else { return .failure(Failure(reason: errorText(errno))) }
        switch status.st_mode & S_IFMT {
        case S_IFREG: break
        case S_IFDIR: return .failure(Failure(reason: errorText(EISDIR)))
        default: return .failure(Failure(reason: "not a regular file"))
        }
        if Int(status.st_size) > maximum { return .failure(tooLarge(Int(status.st_size), maximum)) }
        // One byte more than the limit shows a file that grew since fstat.
        var bytes = [UInt8](repeating: 0, count: maximum + 1)
        var count = 0
        while count < bytes.count {
            let n = bytes.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress! + count, $0.count - count) }
            if n < 0 {
                if errno == EINTR { continue }
                return .failure(Failure(reason: errorText(errno)))
            }
            if n == 0 { break }
            count += n
        }
        if count > maximum { return .failure(tooLarge(count, maximum, atLeast: true)) }
        bytes.removeSubrange(count...)
        return .success(bytes)
    }

    static func tooLarge(_ size: Int, _ maximum: Int, atLeast: Bool = false) -> Failure {
        Failure(reason: "the file is \(atLeast ? "more than \(maximum)" : String(size)) bytes; a policy may have at most \(maximum) (\(maximum >> 20) MiB)")
    }

    static func errorText(_ code: Int32) -> String {
        strerror(code).map { String(cString: $0) } ?? "error \(code)"
    }
}
