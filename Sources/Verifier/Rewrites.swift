import Policy
import SieveCore
import X86

/// What `sieve patch` puts in place of an instruction the policy refuses (DESIGN §9): a
/// replacement of the same total length, the same semantics but for a hint, that the core
/// re-encodes (`struct sieve_rewrite`, applied in `dyncode.c`).
public struct Rewrite: Sendable, Equatable {
    public enum Action: UInt8, Sendable {
        /// The same prefixes and operand bytes under the opcode of `to`, padded with NOPs.
        case opcode = 1
        /// NOPs of the same length.
        case nop = 2
    }

    public let form: Int
    public let action: Action
    /// The form it becomes (`opcode` only).
    public let to: Int?
    /// The policy's `rewrite` rule (index in `ResolvedPolicy.rewrites`), nil when the database derived it.
    public let rule: Int?

    /// Same-length replacements for every form the policy does not accept outright: the policy's
    /// `rewrite` rules first (the last that names a form decides), then the hints the database
    /// knows how to drop: a non-temporal move becomes its temporal twin (`movnti` → `mov`,
    /// `movntdq` → `movdqa`, ...), a prefetch becomes NOPs.
    static func derive(_ policy: ResolvedPolicy, _ plans: [FormPlan], _ database: ISADatabase) -> [Rewrite] {
        let forms = database.forms
        let byMnemonic = Dictionary(grouping: forms, by: \.mnemonic)
        var out: [Rewrite] = []
        for form in forms where plans[form.index].decision != .accept {
            if let k = policy.rewrite(for: form) {
                let rule = policy.rewrites[k]
                if rule.to == "nop" {
                    out.append(Rewrite(form: form.index, action: .nop, to: nil, rule: k))
                } else if let target = twin(of: form, among: database[rule.to].map { [$0] } ?? byMnemonic[rule.to] ?? []) {
                    out.append(Rewrite(form: form.index, action: .opcode, to: target.index, rule: k))
                }
            } else if prefetches.contains(form.mnemonic) {
                out.append(Rewrite(form: form.index, action: .nop, to: nil, rule: nil))
            } else if let names = temporalTwins[form.mnemonic],
                      let target = twin(of: form, among: names.flatMap { byMnemonic[$0] ?? [] }.filter { plans[$0.index].decision == .accept }) {
                out.append(Rewrite(form: form.index, action: .opcode, to: target.index, rule: nil))
            }
        }
        return out
    }

    /// Prefetches: hints with no architectural effect, so NOPs of the same length do what they do.
    static let prefetches: Set<String> = ["prefetch", "prefetchw", "prefetchwt1", "prefetchnta", "prefetcht0", "prefetcht1",
                                          "prefetcht2", "prefetchit0", "prefetchit1"]

    /// Each non-temporal move's temporal twin: the same move without the cache-bypassing hint.
    /// MOVNTDQA's twin MOVDQA keeps its alignment rule; MASKMOVQ and MASKMOVDQU have no twin.
    static let temporalTwins: [String: [String]] = [
        "movnti": ["mov"], "movntq": ["movq"], "movntdq": ["movdqa"], "movntdqa": ["movdqa"], "movntps": ["movaps"],
        "movntpd": ["movapd"], "movntss": ["movss"], "movntsd": ["movsd"],
        "vmovntdq": ["vmovdqa", "vmovdqa32", "vmovdqa64"], "vmovntdqa": ["vmovdqa", "vmovdqa32", "vmovdqa64"],
        "vmovntps": ["vmovaps"], "vmovntpd": ["vmovapd"],
    ]

    /// The first candidate the core can re-encode `form` as: the same encoding, operand size (32
    /// where `form` names none: no prefix selects it), W, L and mandatory prefix (or none where
    /// `form` forbids one), a ModRM and no immediate in both, and operands pairwise alike (the same
    /// register operands; `form`'s memory operand where the candidate has memory or r/m of the
    /// same size), read and written alike.
    static func twin(of form: Form, among candidates: [Form]) -> Form? {
        guard form.modrm != nil, form.immediates.isEmpty, !form.opcodeAddsRegister, mapCode(form) != nil else { return nil }
        return candidates.first { t in
            guard t.index != form.index, t.encoding == form.encoding, t.operandSize == form.operandSize || (form.operandSize == nil && t.operandSize == 32), t.w == form.w,
                  t.l == form.l, t.modrm != nil, t.immediates.isEmpty, !t.opcodeAddsRegister, let map = mapCode(t),
                  form.encoding == .legacy || map == mapCode(form),
                  t.mandatoryPrefix == form.mandatoryPrefix || (form.mandatoryPrefix == .np && t.mandatoryPrefix == .ordinary),
                  t.operands.count == form.operands.count, t.memoryBits == form.memoryBits else { return false }
            return zip(form.operands, t.operands).allSatisfy { a, b in
                guard a.kind.location == .memory else { return a.kind == b.kind && a.access == b.access }
                // r/m read-write only because its register form merges (MOVSS): its memory form writes
                let access = a.access == b.access || (a.access == .write && b.access == .readWrite && b.kind.location == .modrmRegisterOrMemory)
                return access && (b.kind.location == .memory || b.kind.location == .modrmRegisterOrMemory)
            }
        }
    }

    /// The core's number for a map: 0 one-byte, 1 0F, 2 0F38, 3 0F3A (nil: not re-encodable).
    static func mapCode(_ form: Form) -> UInt8? {
        switch form.map {
        case .oneByte: 0
        case .map0F: 1
        case .map0F38: 2
        case .map0F3A: 3
        default: nil
        }
    }

    /// As the core reads it.
    func core(_ database: ISADatabase) -> sieve_rewrite {
        let target = to.map { database.forms[$0] }
        return sieve_rewrite(form: UInt16(form), to: UInt16(to ?? Int(SIEVE_NO_FORM)), action: action.rawValue,
                             map: target.flatMap(Self.mapCode) ?? 0, opcode: target?.opcode ?? 0, rule: Int32(rule ?? -1))
    }
}
