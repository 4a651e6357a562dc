import Policy
import SieveCore
import X86

/// What the core's fast path (`fast_step`) may take without the full decode and check, per form:
/// the core's `enum sieve_quick`, set per form pattern by the table compiler. Tests hold the fast
/// path to the full one, report by report.
public enum QuickFlags {
    /// Decodable by the fast path (no register checks, no moffs; never set on prefix or escape bytes).
    public static let decode = UInt8(SIEVE_Q_DECODE.rawValue)
    /// Accepted by the policy outright and by the model but for its register writes and memory operand.
    public static let accept = UInt8(SIEVE_Q_ACCEPT.rawValue)
    /// A lone 66 is neither invalid, refused nor redundant.
    public static let operandSize = UInt8(SIEVE_Q_66.rawValue)
    /// NaCl's NOP prefixes are neither invalid nor refused (no immediate).
    public static let nop66 = UInt8(SIEVE_Q_NOP66.rawValue)
    public static let call = UInt8(SIEVE_Q_CALL.rawValue), direct = UInt8(SIEVE_Q_DIRECT.rawValue)
    public static let noMemory = UInt8(SIEVE_Q_NO_MEMORY.rawValue)
    /// No ModRM, register operand or immediate (the full check judges a REX on it), or a NOP
    /// (the full check judges a lone 66 with memory, unless it is NaCl's nopw).
    public static let look = UInt8(SIEVE_Q_LOOK.rawValue)
}

extension CompiledPolicy {
    /// A form's quick flags: what the core's fast path may take without the full decode and check.
    public func quickFlags(_ index: Int, _ f: DecoderTableExport.FormFacts) -> UInt8 {
        let decision = policy.accepted.decisions[index]
        return quickFlags(index, f, accepted: decision.conditional.isEmpty && (decision.unconditional.map { policy.rules[$0].accepts } ?? false))
    }

    /// The flags of the form's memory instances when they differ: a form whose only instance rules
    /// select its register operands (nacl-2015's `{form: nop_rm16, operands: register}`) has
    /// memory instances the policy accepts outright (NaCl's padding NOPs), which the fast path may take.
    public func memoryQuickFlags(_ index: Int, _ f: DecoderTableExport.FormFacts) -> UInt8? {
        let decision = policy.accepted.decisions[index]
        guard !decision.conditional.isEmpty, decision.unconditional.map({ policy.rules[$0].accepts }) ?? false,
              decision.conditional.allSatisfy({ k in
                  var s = policy.rules[k].selector
                  guard s.operands == [.register] else { return false }
                  s.operands = nil
                  return !PolicyLoader.isConditional(s, policy.groups)   // operands the only instance field
              }) else { return nil }
        return quickFlags(index, f, accepted: true)
    }

    func quickFlags(_ index: Int, _ f: DecoderTableExport.FormFacts, accepted: Bool) -> UInt8 {
        let plan = plans[index], facts = plan.facts
        var q: UInt8 = 0
        if f.registerChecks & 0xFF == 0 && f.distinct == 0 && !f.hasMoffs { q |= QuickFlags.decode }
        if accepted && plan.forbidden == 0 && facts.isDisjoint(with: [.indirectBranch, .ret, .stringRSI, .stringRDI, .bitOffset]) {
            q |= QuickFlags.accept
        }
        // 66 neither invalid nor refused; a lone 66 also not redundant (it selects or sizes the form); NaCl's NOP
        // prefixes exempt only at its exact length (no immediate).
        if FormClasses(rawValue: f.classes).isDisjoint(with: [.no66, .intelForce64]) {
            q |= (f.immediateBytes == 0 ? QuickFlags.nop66 : 0) | (f.prefixUse & 1 != 0 ? QuickFlags.operandSize : 0)
        }
        if facts.contains(.call) { q |= QuickFlags.call }
        if facts.contains(.directBranch) { q |= QuickFlags.direct }
        if facts.contains(.noMemoryAccess) { q |= QuickFlags.noMemory }
        let form = database.forms[index]
        let bare = form.modrm == nil && f.immediateBytes == 0 && form.operands.allSatisfy { $0.kind.registerClass == .none }
        if bare || form.classes.contains(.nop) { q |= QuickFlags.look }
        return q
    }
}

extension FormPlan {
    public var writesList: [Int] { [Int(writes.0), Int(writes.1), Int(writes.2)] }

    /// The writes as the fast path reads them (`enum sieve_fast_write`): where the restricted register is
    /// (the first write, zero-extended and 32 bits wide) in the high nibble, the places of the others below.
    public var fastWrites: UInt8 {
        typealias Slot = WriteSlot
        let slots = writesList.prefix { $0 != 0 }.map(UInt8.init)
        var summary: UInt8 = 0
        for (k, slot) in slots.enumerated() {
            let place = slot & 15
            if k == 0 && slot & Slot.zeroExtends != 0 && slot & UInt8(SIEVE_W_WIDTH.rawValue) == Slot.width32 {
                summary |= (place == Slot.modrmReg ? 1 : place == Slot.modrmRM ? 2 : place == Slot.opcodeRegister ? 3 : 4) << 4
                continue
            }
            switch place {
            case Slot.modrmReg: summary |= UInt8(SIEVE_FW_REG.rawValue)
            case Slot.modrmRM: summary |= UInt8(SIEVE_FW_RM.rawValue)
            case Slot.opcodeRegister: summary |= UInt8(SIEVE_FW_OPCODE.rawValue)
            default: break   // EAX, or VVVV (none in the fast path's maps): register 0, which the model lets be written
            }
        }
        return summary
    }
}

/// The decoder's patterns regrouped for the C core: one list per opcode entry and prefix context,
/// holding only the patterns whose operand size (and W) that context selects, each list ending in
/// a sentinel that matches anything. The matching loop then needs neither the size rule nor a count.
public struct PatternLists: Sendable {
    public static let noForm: UInt16 = 65535
    // The key fields the contexts decide (the core's S_SIZE and S_W).
    static let sizeShift = DecoderTableExport.sizeShift, wShift = DecoderTableExport.wShift
    static let folded: UInt64 = 7 << sizeShift | 3 << wShift
    /// Prefix and escape bytes of the one-byte map, and the escapes of the 0F map: the fast path
    /// decodes the byte after at most a 66 and a REX as an opcode of these maps, so none of them may be Q_DECODE.
    static let notOpcodes: Set<Int> = Set([0x26, 0x2E, 0x36, 0x3E, 0x64, 0x65, 0x66, 0x67, 0xF0, 0xF2, 0xF3, 0x0F, 0xC4, 0xC5, 0x62, 0x8F]
                                          + Array(0x40...0x4F) + [256 + 0x38, 256 + 0x3A, 256 + 0x0F])

    /// The key's operand kinds (`modrmEntry`): a register ModRM (or none), a memory operand.
    static let registerKey: UInt64 = 1, memoryKey: UInt64 = 2

    public private(set) var patterns: [(allowed: UInt64, form: UInt16, quick: UInt8)] = []
    public private(set) var starts: [[Int]] = []

    /// quick: each form's Q_ flags (Q_DECODE meaning only that the form allows it); memoryQuick: the
    /// flags of a form's memory instances where they differ (its patterns are split by operand kind).
    public init(_ tables: DecoderTableExport, quick: [UInt8], memoryQuick: [Int: UInt8] = [:]) {
        var known: [[UInt64]: Int] = [:]  // a list (fields flattened) to its start: equal lists share
        for (k, entry) in tables.entries.enumerated() {
            let vector = k / 256 >= 5, fast = k < 512 && !Self.notOpcodes.contains(k)
            let members = tables.patterns[Int(entry.start)..<Int(entry.start) + Int(entry.count)]
            var row: [Int] = []
            for context in 0..<3 {
                // Legacy maps: none, 66, REX.W. VEX/EVEX/XOP allow neither 66 nor REX: the context is W.
                let rexW = !vector && context == 2, has66 = !vector && context == 1, w: UInt64 = vector ? UInt64(context) : rexW ? 1 : 0
                var list: [(allowed: UInt64, form: UInt16, quick: UInt8)] = []
                if !(vector && context == 2) {
                    for p in members {
                        let size = DecoderTableExport.operandSizeValue(p.sizeRule, rexW: rexW, has66: has66)
                        guard p.allowed & (1 << (Self.sizeShift + size)) != 0, p.allowed & (1 << (Self.wShift + w)) != 0 else { continue }
                        // the decoder refuses some encodings under REX.W: the fast path leaves them to it
                        let decodable = fast && !(rexW && Self.refusedUnderREXW(k, p.allowed))
                        let q = quick[Int(p.form)] & (decodable ? 0xFF : ~QuickFlags.decode)
                        if let m = memoryQuick[Int(p.form)], p.allowed & Self.memoryKey != 0 {
                            list.append(((p.allowed | Self.folded) & ~Self.registerKey, p.form, m & (decodable ? 0xFF : ~QuickFlags.decode)))
                        }
                        list.append((p.allowed | Self.folded, p.form, q))
                    }
                }
                list.append((~0, Self.noForm, 0))
                let flat = list.flatMap { [$0.allowed, UInt64($0.form), UInt64($0.quick)] }
                if let start = known[flat] { row.append(start); continue }
                known[flat] = patterns.count
                row.append(patterns.count)
                patterns += list
            }
            starts.append(row)
        }
    }

    /// Whether the decoder refuses an instance of the pattern under REX.W (`Decoder.refusal`): the far
    /// transfers FF /3 and FF /5, the segment loads 0F B2, B4 and B5.
    static func refusedUnderREXW(_ entry: Int, _ allowed: UInt64) -> Bool {
        let regShift = DecoderTableExport.regShift
        if entry == 0xFF { return allowed & (1 << (regShift + 3) | 1 << (regShift + 5)) != 0 }
        return [256 + 0xB2, 256 + 0xB4, 256 + 0xB5].contains(entry)
    }

    /// A ModRM byte for the core (`sieve_modrm`): its key bits (DecoderTables' modShift 0, regShift 2, rmShift 10),
    /// the SIB and displacement bytes after it, whether it is a memory operand, whether a SIB base of 5 adds 4,
    /// whether it is RIP-relative, whether a SIB follows (the core's SIEVE_M_ bits).
    public static func modrmEntry(_ m: UInt8) -> UInt32 {
        let mod = m >> 6, reg = (m >> 3) & 7, rm = m & 7, memory = mod != 3
        let key: UInt32 = (memory ? 2 : 1) | 1 << (2 + UInt32(reg)) | 1 << (10 + UInt32(rm))
        let displacement: UInt32 = mod == 1 ? 1 : mod == 2 || (mod == 0 && rm == 5) ? 4 : 0
        let after: UInt32 = memory ? (rm == 4 ? 1 : 0) + displacement : 0
        let bits: UInt32 = (memory ? SIEVE_M_MEMORY.rawValue : 0) | (mod == 0 && rm == 4 ? SIEVE_M_SIB_NO_BASE5.rawValue : 0)
            | (mod == 0 && rm == 5 ? SIEVE_M_RIP.rawValue : 0) | (memory && rm == 4 ? SIEVE_M_SIB.rawValue : 0)
        return key | after << 24 | bits
    }
}
