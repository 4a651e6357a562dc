/// Which prefixes of a decoded instruction change nothing, for policies that refuse them
/// (`prefix: redundant`): Reptar is a redundant REX on REP MOVSB; compilers pad with repeated 0x66.
extension Decoder {
    /// `redundantPrefixes` of an instruction this decoder decoded at `code`, for readers whose
    /// decoder skipped the analysis.
    public func redundantPrefixes(of insn: Instruction, code: UnsafePointer<UInt8>) -> UInt16 {
        insn.opcodeOffset == 0 ? 0 : redundantPrefixes(insn, tables.facts[insn.formIndex].prefixUse, code)
    }

    /// A bit per prefix position (0 is the instruction's first byte) for each prefix that has no
    /// effect on this instruction: a repeat of a prefix that takes effect later, a segment
    /// override the CPU ignores, 0x66/0x67/F2/F3/REX where the form does not use them.
    func redundantPrefixes(_ insn: Instruction, _ use: DecoderTables.PrefixUse, _ code: UnsafePointer<UInt8>) -> UInt16 {
        let count = Int(insn.opcodeOffset)
        var mask: UInt16 = 0
        var groupsSeen: UInt8 = 0
        // Walk backwards: the last prefix of each group is the one that can take effect.
        for position in stride(from: count - 1, through: 0, by: -1) {
            let byte = code[position]
            let group = Self.prefixGroup(byte)
            if groupsSeen & group != 0 || !Self.takesEffect(byte, insn, use) {
                mask |= 1 << position
            }
            groupsSeen |= group
        }
        return mask
    }

    /// Prefixes of one group override each other: the last one counts.
    private static func prefixGroup(_ byte: UInt8) -> UInt8 {
        switch byte {
        case 0xF0: 1
        case 0xF2, 0xF3: 2
        case 0x26, 0x2E, 0x36, 0x3E, 0x64, 0x65: 4
        case 0x66: 8
        case 0x67: 16
        default: 32  // REX
        }
    }

    private static func takesEffect(_ byte: UInt8, _ insn: Instruction, _ use: DecoderTables.PrefixUse) -> Bool {
        let memory = insn.hasMemoryModRM || use.contains(.implicitMemory)
        switch byte {
        case 0xF0:
            return true  // LOCK where it cannot take effect is invalid, not redundant
        case 0x66:
            return use.contains(.operandSize)
        case 0x67:
            return memory || use.contains(.addressSize)
        case 0xF2, 0xF3:
            if use.contains(.repeats) || insn.prefixes.contains(.lock) { return true }  // XACQUIRE / XRELEASE
            if byte == 0xF2 { return use.contains(.bnd) }
            return use.contains(.xrelease) && insn.hasMemoryModRM
        case 0x26, 0x2E, 0x36, 0x3E:
            // Ignored in 64-bit mode, except as branch hints (2E/3E on Jcc) and NOTRACK (3E).
            if use.contains(.branchHint) { return byte == 0x2E || byte == 0x3E }
            return byte == 0x3E && use.contains(.notrack)
        case 0x64, 0x65:
            return memory
        default:
            return byte == insn.rex && rexTakesEffect(byte, insn, use)
        }
    }

    private static func rexTakesEffect(_ rex: UInt8, _ insn: Instruction, _ use: DecoderTables.PrefixUse) -> Bool {
        if use.contains(.byteRegister) && Self.namesHighByteRegister(insn, use) { return true }
        if rex & 8 != 0 {
            if use.contains(.rexW) || use.contains(.branch66) && insn.prefixes.contains(.operandSize) { return true }
        }
        if rex & 4 != 0 && use.contains(.regOperand) { return true }
        if rex & 2 != 0 && insn.sibOffset != 0 { return true }
        if rex & 1 != 0 {
            let registerInRM = !insn.hasMemoryModRM && insn.hasModRM && use.contains(.rmOperand)
            if insn.hasMemoryModRM || registerInRM || use.contains(.opcodeRegister) { return true }
        }
        return false
    }

    /// Whether a byte-register field holds 4-7, which REX turns from AH..BH into SPL..DIL.
    private static func namesHighByteRegister(_ insn: Instruction, _ use: DecoderTables.PrefixUse) -> Bool {
        if use.contains(.opcodeRegister) && !insn.hasModRM { return insn.opcode & 7 >= 4 }
        guard insn.hasModRM else { return false }
        if (insn.modrm >> 3) & 7 >= 4 && use.contains(.regOperand) { return true }
        return !insn.hasMemoryModRM && insn.modrm & 7 >= 4
    }
}
