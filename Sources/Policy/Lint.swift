import X86

/// Checks beyond the schema: a selector that selects nothing is an error (a typo that would
/// silently ban or trust nothing); a ban without a reason, a sensitive trust without a reason, and
/// an `allow` that reverses a parent's referenced ban are warnings.
enum Lint {
    /// Groups whose trust a reviewer must see justified.
    static let sensitiveGroups: Set<String> = ["timers", "perf-counters", "cache-control", "tsx", "rng", "user-wait", "system",
                                              "descriptor-tables", "flags-image", "segment"]

    /// How many re-admitted referenced bans one rule's warnings list.
    static let maximumReadmissions = 8

    static func check(rules: [Rule], matches: RuleMatches, database: ISADatabase) -> [Diagnostic] {
        var out: [Diagnostic] = []
        for (index, rule) in rules.enumerated() {
            if matches.isEmpty(rule: index) {
                out.append(Diagnostic(.error, rule.file, rule.mark, "this selector matches no instruction form",
                                      hint: "check it with `sieve isa`"))
            }
            if rule.effect == .ban && rule.reason == nil {
                out.append(Diagnostic(.warning, rule.file, rule.mark, "a ban needs a 'reason'",
                                      hint: "say which erratum or risk it answers, and add refs"))
            }
            if rule.effect == .trust, rule.reason == nil, let name = rule.selector.groups?.first, sensitiveGroups.contains(name) {
                out.append(Diagnostic(.warning, rule.file, rule.mark, "trusting the sensitive group '\(name)' needs a 'reason'",
                                      hint: "write it as {group: \(name), reason: ...}"))
            }
        }
        // A child's trust or allow that re-admits what a parent banned with references. The
        // candidates are the referenced bans of the files it extends (every rule before its
        // file's first); they are found through the forms they ban, not by comparing every pair
        // of rules, and rules with the same selector in the same file share the answer. One rule
        // lists at most `maximumReadmissions` of them: the output stays linear in the policy.
        let referencedBans = rules.indices.filter { rules[$0].effect == .ban && !rules[$0].refs.isEmpty }
        guard !referencedBans.isEmpty else { return out }
        var bansBySet: [Int: [Int]] = [:]
        for index in referencedBans { bansBySet[matches.setOfRule[index], default: []].append(index) }
        var banSetsAt = [[Int]](repeating: [], count: matches.formCount)
        for set in bansBySet.keys.sorted() { matches.sets[set].forEach { banSetsAt[$0].append(set) } }
        var firstRuleOfFile: [String: Int] = [:]
        for (index, rule) in rules.enumerated() where firstRuleOfFile[rule.file] == nil { firstRuleOfFile[rule.file] = index }
        struct Key: Hashable { let set: Int, cutoff: Int }
        var readmitted: [Key: (bans: [(ban: Int, form: Int)], more: Bool)] = [:]
        for (index, rule) in rules.enumerated() where rule.accepts {
            let key = Key(set: matches.setOfRule[index], cutoff: firstRuleOfFile[rule.file]!)
            if readmitted[key] == nil {
                // Banned sets sharing a form with this rule's, until more bans than can be listed.
                let forms = matches.sets[key.set]
                var sets: Set<Int> = [], bans: [Int] = []
                forms.forEach { form in
                    guard bans.count <= maximumReadmissions else { return }
                    for set in banSetsAt[form] where bans.count <= maximumReadmissions && sets.insert(set).inserted {
                        bans += bansBySet[set]!.prefix(maximumReadmissions + 1 - bans.count).filter { $0 < key.cutoff }
                    }
                }
                let listed = bans.sorted().prefix(maximumReadmissions).map { ban in
                    (ban, forms.firstShared(with: matches.forms(rule: ban))!)
                }
                readmitted[key] = (listed, bans.count > maximumReadmissions)
            }
            let (listed, more) = readmitted[key]!
            for (earlier, form) in listed {
                let ban = rules[earlier]
                out.append(Diagnostic(.warning, rule.file, rule.mark,
                    "this re-admits \(database.forms[form].id), banned at \(ban.location) (\(ban.refs.joined(separator: ", ")))",
                    hint: "keep the ban, or say in 'reason' why the erratum does not apply"))
            }
            if more {
                out.append(Diagnostic(.warning, rule.file, rule.mark,
                    "this also re-admits forms of other referenced bans (only \(maximumReadmissions) are listed)",
                    hint: "keep the bans, or say in 'reason' why the errata do not apply"))
            }
        }
        return out
    }
}
