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
        // A child's trust or allow that re-admits what a parent banned with references.
        for (index, rule) in rules.enumerated() where rule.accepts {
            for earlier in 0..<index {
                let ban = rules[earlier]
                guard ban.effect == .ban, !ban.refs.isEmpty, ban.file != rule.file,
                      let form = matches.firstShared(index, earlier) else { continue }
                out.append(Diagnostic(.warning, rule.file, rule.mark,
                    "this re-admits \(database.forms[form].id), banned at \(ban.location) (\(ban.refs.joined(separator: ", ")))",
                    hint: "keep the ban, or say in 'reason' why the erratum does not apply"))
            }
        }
        return out
    }
}
