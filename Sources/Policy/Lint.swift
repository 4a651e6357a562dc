import X86

/// Checks beyond the schema: a selector that selects nothing is an error (a typo that would
/// silently ban or trust nothing); a ban without a reason, a sensitive trust without a reason, and
/// an `allow` that reverses a parent's referenced ban are warnings.
enum Lint {
    /// Groups whose trust a reviewer must see justified.
    static let sensitiveGroups: Set<String> = ["timers", "perf-counters", "cache-control", "tsx", "rng", "user-wait", "system",
                                              "descriptor-tables", "flags-image", "segment"]

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
        // of rules, and rules with the same selector in the same file share the answer.
        let referencedBans = rules.indices.filter { rules[$0].effect == .ban && !rules[$0].refs.isEmpty }
        guard !referencedBans.isEmpty else { return out }
        var bansBySet: [Int: [Int]] = [:]
        for index in referencedBans { bansBySet[matches.setOfRule[index], default: []].append(index) }
        var banSetsAt = [[Int]](repeating: [], count: matches.formCount)
        for set in bansBySet.keys.sorted() { matches.sets[set].forEach { banSetsAt[$0].append(set) } }
        var firstRuleOfFile: [String: Int] = [:]
        for (index, rule) in rules.enumerated() where firstRuleOfFile[rule.file] == nil { firstRuleOfFile[rule.file] = index }
        struct Key: Hashable { let set: Int, cutoff: Int }
        var readmitted: [Key: [(ban: Int, form: Int)]] = [:]
        for (index, rule) in rules.enumerated() where rule.accepts {
            let key = Key(set: matches.setOfRule[index], cutoff: firstRuleOfFile[rule.file]!)
            if readmitted[key] == nil {
                // The first form each banned set shares with this rule's (forms in increasing order).
                var firstShared: [Int: Int] = [:]
                matches.sets[key.set].forEach { form in
                    for set in banSetsAt[form] where firstShared[set] == nil { firstShared[set] = form }
                }
                var found: [(ban: Int, form: Int)] = []
                for (set, form) in firstShared {
                    for ban in bansBySet[set]! where ban < key.cutoff { found.append((ban, form)) }
                }
                readmitted[key] = found.sorted { $0.ban < $1.ban }
            }
            for (earlier, form) in readmitted[key]! {
                let ban = rules[earlier]
                out.append(Diagnostic(.warning, rule.file, rule.mark,
                    "this re-admits \(database.forms[form].id), banned at \(ban.location) (\(ban.refs.joined(separator: ", ")))",
                    hint: "keep the ban, or say in 'reason' why the erratum does not apply"))
            }
        }
        return out
    }
}
