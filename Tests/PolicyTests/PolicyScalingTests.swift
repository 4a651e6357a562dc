import Foundation
import Testing
@testable import Policy
import X86

/// Resolution is linear in the policy's size: the indexed matcher (`SelectorSets`) and the
/// last-rule-first resolver are checked here against the definitions they replace, a scan of
/// every form with `Selector.matchesForm` and a walk of every rule for every form.
@Suite struct PolicyScalingTests {
    static let profiles: [String] = {
        let errata = (try? FileManager.default.contentsOfDirectory(atPath: Paths.policy("errata"))) ?? []
        return ["standard.yaml", "hardened.yaml", "paranoid.yaml", "minimal.yaml", "nacl.yaml", "nacl-2015.yaml"]
            + errata.filter { $0.hasSuffix(".yaml") }.sorted().map { "errata/" + $0 }
    }()

    /// A policy whose groups nest, use instance fields and trusted extensions.
    static let groupPolicy = """
        sieve: 1
        name: groups
        trust: [base, sse, sse2, {group: clocks, reason: r}, vaes, avx]
        allow: [{group: outer, mnemonic: [xchg, add, rdtsc]}, {group: locked}]
        ban:
          - {group: inner, reason: r}
          - {extension: rtm, reason: r}
          - {class: [string, far-transfer], encoding: legacy, reason: r}
          - {register: ah, reason: r}
        groups:
          clocks: [{mnemonic: [rdtsc, rdtscp]}]
          inner: [{mnemonic: xchg, operands: memory}, {group: clocks}]
          outer: [{group: inner}, {mnemonic: add}]
          locked: [{group: outer, prefix: lock}, {vector-length: 256, extension: avx}]
        """

    static func policies() throws -> [ResolvedPolicy] {
        let dir = try Paths.folder(["groups.yaml": Array(groupPolicy.utf8)])
        return try profiles.map { try PolicyLoader.load(Paths.policy($0)) } + [try PolicyLoader.load(dir + "/groups.yaml")]
    }

    @Test func indexedMatchingAgreesWithMatchesForm() throws {
        let database = ISADatabase.shared
        for policy in try Self.policies() {
            var definition = policy.groups
            definition.userMembers = [:]  // mayContain falls back to matching the groups' selectors
            let matches = RuleMatches(policy.rules, policy.groups, database)
            for (index, rule) in policy.rules.enumerated() {
                for form in database.forms {
                    let expected = rule.selector.matchesForm(form, groups: definition)
                    #expect(matches.matches(rule: index, form: form.index) == expected,
                            "\(policy.path): rule at \(rule.location) on \(form.id)")
                }
            }
        }
    }

    @Test func resolutionAgreesWithWalkingEveryRuleForEveryForm() throws {
        for policy in try Self.policies() {
            let matches = RuleMatches(policy.rules, policy.groups, ISADatabase.shared)
            for form in 0..<matches.formCount {
                var unconditional: Int?, conditional: [Int] = []
                for index in policy.rules.indices where matches.matches(rule: index, form: form) {
                    if PolicyLoader.isConditional(policy.rules[index].selector, policy.groups) {
                        conditional.append(index)
                    } else {
                        unconditional = index
                        conditional.removeAll()
                    }
                }
                let decision = policy.accepted.decisions[form]
                #expect(decision.unconditional == unconditional && decision.conditional == conditional, "\(policy.path): form \(form)")
            }
        }
    }

    @Test func nestedInstanceFieldsMakeARuleConditionalAtAnyDepth() throws {
        // Deeper than the 16 levels the old check looked through, but within the limit once the
        // chain is counted from the rule: a rule naming g0 must be conditional.
        var text = "sieve: 1\nname: t\ntrust: [base]\nallow: [{group: g0}]\ngroups:\n  g15: [{mnemonic: xchg, prefix: lock}]\n"
        for i in 0..<15 { text += "  g\(i): [{group: g\(i + 1)}]\n" }
        let dir = try Paths.folder(["main.yaml": Array(text.utf8)])
        let policy = try PolicyLoader.load(dir + "/main.yaml")
        #expect(PolicyLoader.isConditional(policy.rules[1].selector, policy.groups))
        #expect(policy.groups.conditionalUserGroups.count == 16)
    }

    @Test func repeatedRulesShareOneFormSet() throws {
        let text = "sieve: 1\nname: t\ntrust:\n" + String(repeating: "  - base\n", count: 10_000)
            + "ban:\n" + String(repeating: "  - {mnemonic: clflush, reason: r}\n", count: 10_000)
        let dir = try Paths.folder(["main.yaml": Array(text.utf8)])
        let policy = try PolicyLoader.load(dir + "/main.yaml")
        let matches = RuleMatches(policy.rules, policy.groups, ISADatabase.shared)
        #expect(policy.rules.count == 20_000)
        #expect(matches.sets.count == 2)
        // The last of each decides.
        let clflush = try #require(ISADatabase.shared.forms.first { $0.mnemonic == "clflush" })
        #expect(policy.accepted.decidingRule(clflush.index)?.mark.line == 3 + 10_000 + 1 + 10_000)
    }

    @Test func groupCyclesNameAGroupOfTheCycle() throws {
        let text = "sieve: 1\nname: t\ntrust: [a]\ngroups:\n  a: [{group: b}]\n  b: [{group: c}]\n  c: [{group: a}, {mnemonic: add}]\n  d: [{group: d}]\n  e: [{group: a}]\n"
        let dir = try Paths.folder(["main.yaml": Array(text.utf8)])
        #expect(throws: PolicyErrors.self) { try PolicyLoader.load(dir + "/main.yaml") }
        do { _ = try PolicyLoader.load(dir + "/main.yaml") } catch {
            let messages = error.diagnostics.map(\.message)
            #expect(messages == ["group 'a' contains itself (through 'c')", "group 'b' contains itself (through 'a')",
                                 "group 'c' contains itself (through 'b')", "group 'd' contains itself (through 'd')"])
        }
    }

    @Test func sourceLinesMatchTheLineScan() {
        for text in ["", "\n", "a", "a\n", "a\nb", "a\n\nb\n", "\tx\r\ty\nz", "x\n\n"] {
            let bytes = Array(text.utf8)
            let lines = SourceLines(bytes)
            let split = bytes.split(separator: 0x0A, omittingEmptySubsequences: false)
                .map { String(decoding: $0.map { $0 == 0x09 ? 0x20 : ($0 < 0x20 ? 0x3F : $0) }, as: UTF8.self) }
            let expected = text.hasSuffix("\n") ? Array(split.dropLast()) : (text.isEmpty ? [] : split)
            for (n, line) in expected.enumerated() {
                #expect(lines.line(n + 1) == line, "\(text.debugDescription) line \(n + 1)")
                #expect(Diagnostic.line(n + 1, of: bytes) == line)
            }
            #expect(lines.line(expected.count + 1) == nil, "\(text.debugDescription)")
        }
    }
}
