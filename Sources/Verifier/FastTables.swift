import SieveCore
import X86

/// The core's fast path tables (`fast_run`, `enum sieve_fast_bits` in sieve_core.h), gathered from the
/// core's own pattern lists: for each prefix context and opcode, and each class of ModRM byte (its reg
/// field, register or memory, and REX.B), what the core's pattern walk finds for every ModRM byte of the
/// class, where that is the same for all of them and the fast path may take it; nothing (the full path)
/// otherwise. The length then needs one table per byte it depends on, and the checks none in series.
/// Tests hold the fast path to the full one.
public struct FastTables: Sendable {
    /// Per context (66, REX.W, F2 or F3, and whether a REX is there) and opcode: 12288 of them (REX.W without a REX
    /// is no context: those 2048 stay empty).
    public internal(set) var entries: [UInt32]
    /// Rows of 32 descriptors; row 0 takes nothing.
    public internal(set) var descriptors: [UInt32]

    static let take = SIEVE_FD_TAKE.rawValue, look = SIEVE_FD_LOOK.rawValue, call = SIEVE_FD_CALL.rawValue
    static let direct = SIEVE_FD_DIRECT.rawValue, memory = SIEVE_FM_CHECK.rawValue
    /// The restricted register's fields (bits 10-14 shift, 15-19 mask, 20-24 fixed) and "none".
    static let noRegister: UInt32 = 16
    static func restricted(shift: UInt32, mask: UInt32, fixed: UInt32) -> UInt32 { shift << 10 | mask << 15 | fixed << 20 }
    /// %rsp, %rbp and %r15: the registers the fast path leaves to the full check when written.
    static func sandbox(_ register: Int) -> Bool { register == 4 || register == 5 || register == 15 }

    public init(entries coreEntries: [sieve_entry], patterns: [sieve_pattern], modrm: [UInt32], forms: [sieve_form]) {
        var rows: [[UInt32]: Int] = [Array(repeating: 0, count: 32): 0]
        var descriptors = [UInt32](repeating: 0, count: 32), entries = [UInt32](repeating: 0, count: Int(SIEVE_FAST_MODRM))
        let base = 1 << (DecoderTableExport.addressShift + 1) | 1 << DecoderTableExport.lShift
        for context in 0..<24 where context >= 12 || context & 2 == 0 {
            // the last of F2 and F3 selects the key's prefix field (as decode's sel: F3 2, F2 3), else 66
            let rex = context >= 12, o16 = context & 1, rexW = context >> 1 & 1, rep = (context % 12) >> 2
            let selector = rep == 0 ? o16 : rep == 1 ? 3 : 2
            for opcode in 0..<512 where !PatternLists.notOpcodes.contains(opcode) && coreEntries[opcode].mod_ignored == 0 {
                let e = coreEntries[opcode], start = Int(rexW == 1 ? e.start.2 : o16 == 1 ? e.start.1 : e.start.0)
                let hasModRM = e.has_modrm != 0
                // The pattern the core's walk finds for a ModRM byte (none: as the core, that of 0xC0) and REX.B.
                func walk(_ m: Int, _ rexB: Int) -> sieve_pattern {
                    let key = UInt64(modrm[m] & 0x3FFFF) | UInt64(base) | 1 << (DecoderTableExport.prefixShift + UInt64(selector))
                        | 1 << (DecoderTableExport.rexBShift + UInt64(rexB))
                    var k = start
                    while k < patterns.count - 1, key & ~patterns[k].allowed != 0 { k += 1 }
                    return patterns[k]
                }
                guard patterns[start].allowed != ~0 else { continue }   // nothing decodes there
                var row = [UInt32](repeating: 0, count: 32), immediates = [UInt8](repeating: 0, count: 32)
                for slot in 0..<32 {
                    let isMemory = slot & 1 == 1, rexB = slot >> 4, members = hasModRM ? Self.classes[slot & 15] : [0xC0]
                    let p = walk(members[0], rexB)
                    guard members.dropFirst().allSatisfy({
                        let q = walk($0, rexB)
                        return q.form == p.form && q.quick == p.quick && q.writes == p.writes && q.imm == p.imm
                    }) else { continue }
                    row[slot] = Self.descriptor(p, o16: o16 == 1, rex: rex, repeats: rep != 0, form: p.form == PatternLists.noForm ? nil : forms[Int(p.form)],
                                                opcodeRegister: opcode & 7 | rexB << 3, hasModRM: hasModRM, memory: isMemory)
                    immediates[slot] = p.imm
                }
                // One immediate size per opcode (the length needs it before the descriptor): ModRM.reg 0's, or the lowest
                // taken (F6 and F7: TEST's, the most common of the group in compiled code).
                let taken = (0..<32).filter { row[$0] != 0 }
                guard let first = taken.first else { continue }
                let immediate = immediates[first]
                for slot in taken where immediates[slot] != immediate { row[slot] = 0 }
                let offset: Int
                if let known = rows[row] { offset = known } else { offset = descriptors.count; rows[row] = offset; descriptors += row }
                entries[context << 9 | opcode] = UInt32(1 + (hasModRM ? 1 : 0) + Int(immediate)) | (hasModRM ? SIEVE_FE_MODRM.rawValue : 0) | UInt32(offset) << 16
            }
        }
        self.entries = entries
        self.descriptors = descriptors
    }

    /// The ModRM bytes of each class (slot & 15: ModRM.reg << 1 | memory).
    static let classes: [[Int]] = (0..<16).map { slot in (0..<256).filter { $0 >> 3 & 7 == slot >> 1 && ($0 < 0xC0) == (slot & 1 == 1) } }

    /// The descriptor of a pattern in a context: what fast_run checks, or 0 where the full path must judge.
    static func descriptor(_ p: sieve_pattern, o16: Bool, rex: Bool, repeats: Bool, form f: sieve_form?, opcodeRegister: Int, hasModRM: Bool,
                           memory: Bool) -> UInt32 {
        guard let f, p.quick & QuickFlags.decode != 0 else { return 0 }
        // Accepted outright, by the policy and the model but for writes, memory and branch target; or an indirect
        // jump or call through a register, accepted but for NaCl's masked jump, which fast_run checks.
        let indirect = hasModRM && !memory && f.decision == 0 && f.conditional_count == 0 && f.forbidden == 0
            && f.facts & SIEVE_F_INDIRECT.rawValue != 0
            && f.facts & (SIEVE_F_RET.rawValue | SIEVE_F_RSI.rawValue | SIEVE_F_RDI.rawValue | SIEVE_F_BIT_OFFSET.rawValue) == 0
        guard p.quick & QuickFlags.accept != 0 || indirect else { return 0 }
        // F2 or F3: only where it selects the form or repeats it (then neither invalid nor redundant)
        if repeats && (f.prefix_use & 8 == 0 || f.classes & (1 << 31) != 0) { return 0 }
        // in the context 66: taken where a lone 66 is fine; NaCl's padding NOP (66 2E ...) has its own flag
        var d = !o16 || p.quick & QuickFlags.operandSize != 0 ? take : 0
        if o16 && p.quick & QuickFlags.nop66 != 0 { d |= SIEVE_FD_NOP66.rawValue }
        guard d != 0 else { return 0 }
        // an operand-less form or a NOP: fine but with a REX, or a 66 with memory (but NaCl's nopw: fast_run's look)
        if p.quick & QuickFlags.look != 0 && (rex || (o16 && hasModRM && memory)) { d |= look }
        if p.quick & QuickFlags.call != 0 { d |= call }
        if indirect { d |= SIEVE_FD_INDIRECT.rawValue | SIEVE_FM_RM_R15.rawValue }   // (not through %r15)
        if p.quick & QuickFlags.direct != 0 && p.imm > 0 {
            guard !hasModRM else { return 0 }   // (none is): fast_run finds the offset at the length's end
            d |= direct
        }
        if hasModRM && memory && p.quick & QuickFlags.noMemory == 0 { d |= Self.memory }
        let others = UInt32(p.writes & 7), place = p.writes >> 4
        if others & SIEVE_FW_OPCODE.rawValue != 0 && sandbox(opcodeRegister) { return 0 }
        if others & (SIEVE_FW_REG.rawValue | SIEVE_FW_RM.rawValue) != 0 && !hasModRM { return 0 }
        // A register written at ModRM.reg or .rm: none of %rsp, %rbp, %r15; but the register restricted (the 32-bit
        // destination) may be %esp or %ebp, the first half of a re-basing, after which fast_run stops.
        if others & SIEVE_FW_REG.rawValue != 0 { d |= SIEVE_FM_REG_SANDBOX.rawValue }
        if others & SIEVE_FW_RM.rawValue != 0 { d |= SIEVE_FM_RM_SANDBOX.rawValue }
        switch place {
        case 0: d |= restricted(shift: 0, mask: 0, fixed: noRegister)
        case 1 where hasModRM: d |= SIEVE_FM_REG_R15.rawValue | SIEVE_FM_REG_STACK.rawValue | restricted(shift: 16, mask: 15, fixed: 0)
        case 2 where hasModRM: d |= SIEVE_FM_RM_R15.rawValue | SIEVE_FM_RM_STACK.rawValue | restricted(shift: 20, mask: 31, fixed: 0)
        case 3 where !sandbox(opcodeRegister): d |= restricted(shift: 0, mask: 0, fixed: UInt32(opcodeRegister))
        case 4: d |= restricted(shift: 0, mask: 0, fixed: 0)
        default: return 0
        }
        let special = look | call | direct | SIEVE_FD_INDIRECT.rawValue
        return d & special != 0 ? d | SIEVE_FD_SPECIAL.rawValue : d
    }

    /// The table as the core reads it (`sieve_tables.fast`): entries, ModRM, SIB and descriptors, at SIEVE_FAST_*.
    public var table: [UInt32] { entries + Self.modrm + Self.sib.map(UInt32.init) + descriptors }

    /// Per REX.R and REX.B (`(REX & 5) << 8`) and ModRM byte (1536 of them; REX & 5 is 0, 1, 4 or 5).
    public static let modrm: [UInt32] = (0..<Int(SIEVE_FAST_SIB - SIEVE_FAST_MODRM)).map { k in
        let rex = k >> 8, m = k & 255, mod = m >> 6, rm = m & 7, isMemory = mod != 3
        let reg = m >> 3 & 7 | (rex & 4) << 1, rmRegister = rm | (rex & 1) << 3
        let displacement = mod == 1 ? 1 : mod == 2 || (mod == 0 && rm == 5) ? 4 : 0
        var e = UInt32(isMemory ? (rm == 4 ? 1 : 0) + displacement : 0)
        let rip = mod == 0 && rm == 5, sib = isMemory && rm == 4
        if isMemory && !rip { e |= SIEVE_FM_CHECK.rawValue }
        if sib { e |= SIEVE_FM_SIB.rawValue }
        if isMemory && !rip && !sib && rmRegister != 5 && rmRegister != 15 { e |= SIEVE_FM_BAD_BASE.rawValue }
        if sandbox(reg) { e |= SIEVE_FM_REG_SANDBOX.rawValue | (reg == 15 ? SIEVE_FM_REG_R15.rawValue : SIEVE_FM_REG_STACK.rawValue) }
        if !isMemory && sandbox(rmRegister) {
            e |= SIEVE_FM_RM_SANDBOX.rawValue | (rmRegister == 15 ? SIEVE_FM_RM_R15.rawValue : SIEVE_FM_RM_STACK.rawValue)
        }
        if mod == 0 && rm == 4 { e |= SIEVE_FM_NO_BASE5.rawValue }
        let slot = (m >> 3 & 7) << 1 | (isMemory ? 1 : 0) | (rex & 1) << 4
        return e | SIEVE_FM_ONES.rawValue | UInt32(slot) << 11 | UInt32(reg) << 16 | UInt32(isMemory ? 16 : rmRegister) << 20
    }

    /// Per mod 0 (`SIEVE_FM_NO_BASE5`), REX.X and REX.B (`(REX & 3) << 8`) and SIB byte (2048 of them).
    public static let sib: [UInt8] = (0..<Int(SIEVE_FAST_DESCS - SIEVE_FAST_SIB)).map { k in
        let noBase5 = k & Int(SIEVE_FM_NO_BASE5.rawValue) != 0, rex = k >> 8 & 3, s = k & 255
        let index = s >> 3 & 7 | (rex & 2) << 2, base = s & 7 | (rex & 1) << 3
        let badBase = (noBase5 && s & 7 == 5) || !sandbox(base)
        return UInt8(index == 4 ? 16 : index) | (badBase ? UInt8(SIEVE_FS_BAD_BASE.rawValue) : 0)
    }
}
