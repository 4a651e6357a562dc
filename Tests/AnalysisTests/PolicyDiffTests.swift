import Analysis
import Foundation
import Policy
import Testing
import Verifier
import X86

@Suite struct PolicyDiffTests {
    /// Proof-style (NaCl's way): standard → hardened removes exactly the forms of the groups
    /// hardened bans that standard accepts, and the other way adds exactly those.
    @Test func hardenedRemovesExactlyTheGroupsItBans() throws {
        let standard = try TestPolicy.shipped("standard.yaml"), hardened = try TestPolicy.shipped("hardened.yaml")
        let banned = ["cache-control", "tsx", "rng", "timers", "user-wait"]
        let groups = GroupCatalog.builtins.filter { banned.contains($0.name) }
        #expect(groups.count == banned.count)
        let expected = Set(ISADatabase.shared.forms.filter { form in
            groups.contains { $0.contains(form) } && PolicyDiff.acceptance(standard, form.index) != .refused
        }.map(\.id))
        #expect(expected.count > 30)

        let forward = PolicyDiff(standard, hardened)
        #expect(Set(forward.removed.map(\.form.id)) == expected)
        #expect(forward.added.isEmpty && forward.changed.isEmpty && forward.sandbox.isEmpty)
        #expect(forward.newAccess.forms.isEmpty && forward.newAccess.sandbox.isEmpty, "no new access from standard to hardened")

        let backward = PolicyDiff(hardened, standard)
        #expect(Set(backward.added.map(\.form.id)) == expected)
        #expect(backward.removed.isEmpty)
        #expect(Set(backward.newAccess.forms.map(\.form.id)) == expected, "every re-admitted form is new access")
    }

    /// Dropping Reptar's `prefix: rex` ban adds no form, but re-admits encodings: new access.
    @Test func droppingAnInstanceBanIsNewAccess() throws {
        let standard = try TestPolicy.shipped("standard.yaml"), reptar = try TestPolicy.shipped("errata/reptar.yaml")
        let diff = PolicyDiff(reptar, standard)
        #expect(diff.added.isEmpty && diff.removed.isEmpty)
        #expect(diff.changed.contains { $0.form.id == "movsb_m8_m8" && $0.a == .partial && $0.b == .accepted })
        #expect(diff.newAccess.forms.contains { $0.form.id == "movsb_m8_m8" })
        #expect(PolicyDiff(standard, reptar).newAccess.forms.isEmpty, "adding the ban gives no new access")
    }

    @Test func looserSandboxParametersAreNewAccess() throws {
        let strict = try TestPolicy.load("trust: [base]\n")
        let none = try TestPolicy.load("trust: [base]\n").withModel(.none)
        let diff = PolicyDiff(strict, none)
        #expect(diff.sandbox.contains { $0.parameter == "model" && $0.looser })
        #expect(!diff.added.isEmpty, "forms the NaCl model forbids are accepted under model none")
        let bigger = try TestPolicy.loadRaw("sieve: 1\nname: t\nsandbox:\n  model: nacl-x86-64\n  bundle-size: 64\ntrust: [base]\n")
        #expect(PolicyDiff(strict, bigger).newAccess.sandbox.map(\.parameter) == ["bundle-size"])
        #expect(PolicyDiff(bigger, strict).newAccess.sandbox.isEmpty)
    }

    @Test func samePolicyIsSame() throws {
        let standard = try TestPolicy.shipped("standard.yaml")
        #expect(PolicyDiff(standard, standard).same)
    }
}

extension CompiledPolicy {
    func withModel(_ model: SandboxSettings.Model) -> CompiledPolicy { CompiledPolicy(policy, model: model) }
}

extension TestPolicy {
    static func loadRaw(_ yaml: String) throws -> CompiledPolicy {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sieve-diff-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let path = dir.appendingPathComponent("policy.yaml").path
        try yaml.write(toFile: path, atomically: true, encoding: .utf8)
        return CompiledPolicy(try PolicyLoader.load(path))
    }
}
