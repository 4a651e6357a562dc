import Policy
import Verifier
import X86

/// What two compiled policies accept, compared (DESIGN §2, job 3): never their YAML. Forms are
/// judged as the verifier judges them: the policy's decision, and the sandbox model's deny list.
/// Encodings count, not only forms: a form accepted in part by A (instance rules such as
/// `prefix: rex`) and wholly by B is new access, though no form was added.
public struct PolicyDiff: Sendable {
    public enum Acceptance: String, Sendable { case accepted, partial, refused }

    public struct FormChange: Sendable {
        public let form: Form
        public let a: Acceptance, b: Acceptance
        /// An encoding B accepts and A refuses, when one was found (hex bytes).
        public let example: [UInt8]?
        /// Whether B accepts some encoding A refuses: true, false, or nil when it could not be
        /// decided (both in part, with different instance rules, and no example found).
        public let newAccess: Bool?
    }

    public struct SandboxChange: Sendable {
        public let parameter: String, a: String, b: String
        /// Whether B's value lets through code A's refuses.
        public let looser: Bool
    }

    /// Refused by A, accepted wholly or in part by B.
    public let added: [FormChange]
    /// Accepted wholly or in part by A, refused by B.
    public let removed: [FormChange]
    /// Accepted by both, but not the same encodings (at least one of them in part).
    public let changed: [FormChange]
    public let sandbox: [SandboxChange]
    public let turing: (a: TuringReport.Verdict, b: TuringReport.Verdict)

    public var same: Bool { added.isEmpty && removed.isEmpty && changed.isEmpty && sandbox.isEmpty }

    /// Everything through which B accepts code A refuses (or might: fail closed).
    public var newAccess: (forms: [FormChange], sandbox: [SandboxChange]) {
        (added + changed.filter { $0.newAccess != false }, sandbox.filter(\.looser))
    }

    public init(_ a: CompiledPolicy, _ b: CompiledPolicy) {
        var added: [FormChange] = [], removed: [FormChange] = [], changed: [FormChange] = []
        for form in a.database.forms {
            let x = Self.acceptance(a, form.index), y = Self.acceptance(b, form.index)
            if x == .refused && y == .refused { continue }
            if x == .refused { added.append(FormChange(form: form, a: x, b: y, example: nil, newAccess: true)); continue }
            if y == .refused { removed.append(FormChange(form: form, a: x, b: y, example: nil, newAccess: false)); continue }
            if x == .accepted && y == .accepted { continue }
            if x == .partial && y == .partial && Self.instanceRules(a, form.index) == Self.instanceRules(b, form.index) { continue }
            let example = Self.encodings(of: form).first { Self.accepts(b, $0) && !Self.accepts(a, $0) }
            let newAccess: Bool? = example != nil ? true : x == .partial && y == .accepted ? true : y == .partial && x == .accepted ? false : nil
            changed.append(FormChange(form: form, a: x, b: y, example: example, newAccess: newAccess))
        }
        let order: (FormChange, FormChange) -> Bool = { ($0.form.extensionName, $0.form.mnemonic, $0.form.id) < ($1.form.extensionName, $1.form.mnemonic, $1.form.id) }
        self.added = added.sorted(by: order)
        self.removed = removed.sorted(by: order)
        self.changed = changed.sorted(by: order)

        var sandbox: [SandboxChange] = []
        if a.model != b.model {
            sandbox.append(SandboxChange(parameter: "model", a: a.model.rawValue, b: b.model.rawValue, looser: b.model == .none))
        }
        if a.bundleSize != b.bundleSize {
            // Bundles are the unit of atomicity: larger ones admit layouts smaller ones refuse.
            sandbox.append(SandboxChange(parameter: "bundle-size", a: String(a.bundleSize), b: String(b.bundleSize), looser: b.bundleSize > a.bundleSize))
        }
        if a.callAlignment != b.callAlignment {
            sandbox.append(SandboxChange(parameter: "call-alignment", a: a.callAlignment.rawValue, b: b.callAlignment.rawValue,
                                         looser: b.callAlignment == .warn))
        }
        self.sandbox = sandbox
        turing = (TuringChecker(a).check().verdict, TuringChecker(b).check().verdict)
    }

    /// Forms `a` accepts (wholly or in part) and `b` refuses, in database order: what a ban took away.
    public static func removedForms(_ a: CompiledPolicy, _ b: CompiledPolicy) -> [Form] {
        a.database.forms.filter { acceptance(a, $0.index) != .refused && acceptance(b, $0.index) == .refused }
    }

    /// Forms `a` accepts wholly and `b` only in part: what an instance-level ban took away.
    public static func narrowedForms(_ a: CompiledPolicy, _ b: CompiledPolicy) -> [Form] {
        a.database.forms.filter { acceptance(a, $0.index) == .accepted && acceptance(b, $0.index) == .partial }
    }

    /// The policy's decision on a form, and the model's deny list.
    public static func acceptance(_ compiled: CompiledPolicy, _ index: Int) -> Acceptance {
        let plan = compiled.plans[index]
        if compiled.model == .naclX86_64 && plan.alwaysRefusedByNaCl { return .refused }
        switch plan.decision {
        case .accept: return .accepted
        case .refuse: return .refused
        case .conditional: return .partial
        }
    }

    /// Whether the policy accepts these bytes as one instruction (the model's deny list
    /// included, its layout rules not: those judge code, not encodings).
    static func accepts(_ compiled: CompiledPolicy, _ bytes: [UInt8]) -> Bool {
        guard case .instruction(let insn) = Decoder.shared.decode(bytes), insn.length == bytes.count, insn.refusal == nil else { return false }
        if compiled.model == .naclX86_64 && compiled.plans[insn.formIndex].alwaysRefusedByNaCl { return false }
        return compiled.policy.decision(insn).accepted
    }

    /// The rules that decide a form's instances, as text: equal lists decide equally.
    static func instanceRules(_ compiled: CompiledPolicy, _ index: Int) -> [String] {
        let decision = compiled.policy.accepted.decisions[index]
        let rules = compiled.policy.rules
        return (decision.unconditional.map { [$0] } ?? []).map { "\(rules[$0].effect.rawValue) *" }
            + decision.conditional.map { "\(rules[$0].effect.rawValue) \(rules[$0].selector.canonicalDescription)" }
    }

    /// Encodings of a form to look for a difference in: its sample, with each legacy prefix in
    /// front (once, and repeated: redundant), and with each REX before the opcode.
    static func encodings(of form: Form) -> [[UInt8]] {
        let sample = form.sample
        let legacy: [UInt8] = [0x66, 0x67, 0xF0, 0xF2, 0xF3, 0x2E, 0x3E, 0x26, 0x36, 0x64, 0x65]
        var out = [sample]
        for p in legacy { out += [[p] + sample, [p, p] + sample] }
        var opcodeAt = 0
        while opcodeAt < sample.count && (legacy.contains(sample[opcodeAt]) || sample[opcodeAt] & 0xF0 == 0x40) { opcodeAt += 1 }
        let bare = Array(sample[..<opcodeAt].filter { $0 & 0xF0 != 0x40 }) + sample[opcodeAt...]
        let at = opcodeAt - (sample[..<opcodeAt].contains { $0 & 0xF0 == 0x40 } ? 1 : 0)
        for rex: UInt8 in 0x40...0x4F {
            var variant = bare
            variant.insert(rex, at: at)
            out.append(variant)
        }
        return out
    }
}

extension Form {
    /// The extension a diff groups the form under: its first CPUID feature.
    public var extensionName: String { cpuid.first ?? "none" }
}
