/// Which prefixes of a decoded instruction change nothing, for policies that refuse them
/// (`prefix: redundant`): Reptar is a redundant REX on REP MOVSB; compilers pad with repeated 0x66.
extension Decoder {
    /// A bit per prefix position (0 is the instruction's first byte) for each prefix that has no
    /// effect on this instruction: a repeat of a prefix that takes effect later, a segment
    /// override the CPU ignores, 0x66/0x67/F2/F3/REX where the form does not use them.
    func redundantPrefixes(_ insn: Instruction, _ code: UnsafeRawBufferPointer, at offset: Int) -> UInt16 {
        let count = Int(insn.opcodeOffset)
        guard count > 0 else { return 0 }
        let form = database.forms[insn.formIndex]
        var mask: UInt16 = 0
        var laterSeen = Set<UInt8>()
        // Walk backwards: the last prefix of each group is the one that can take effect.
        for position in stride(from: count - 1, through: 0, by: -1) {
            let byte = code[offset + position]
            let group = Self.prefixGroup(byte)
            if laterSeen.contains(group) {
                mask |= 1 << position
                continue
            }
            laterSeen.insert(group)
            if !Self.takesEffect(byte, insn, form) { mask |= 1 << position }
        }
        return mask
    }

    /// Prefixes of one group override each other: the last one counts.
    private static func prefixGroup(_ byte: UInt8) -> UInt8 {
        switch byte {
        case 0xF2, 0xF3: 0xF3
        case 0x26, 0x2E, 0x36, 0x3E, 0x64, 0x65: 0x2E
        case 0x40...0x4F: 0x40
        default: byte
        }
    }

    private static func takesEffect(_ byte: UInt8, _ insn: Instruction, _ form: Form) -> Bool {
        let memory = insn.hasMemoryModRM || form.operands.contains {
            $0.kind.location == .implicitMemory || $0.kind.location == .memoryOffset
        }
        switch byte {
        case 0xF0:
            return true  // LOCK where it cannot take effect is invalid, not redundant
        case 0x66:
            return form.operandSize == 16 || form.mandatoryPrefix == .p66 || form.classes.contains(.intelForce64)
        case 0x67:
            return memory || form.addressSize != nil
        case 0xF2, 0xF3:
            if form.mandatoryPrefix == .pF2 || form.mandatoryPrefix == .pF3 { return true }
            if form.classes.contains(.string) { return true }
            if insn.prefixes.contains(.lock) { return true }                      // XACQUIRE / XRELEASE
            if byte == 0xF2, let flow = form.flow, [.jmp, .ijmp, .jcc, .call, .icall, .ret].contains(flow) {
                return true                                                         // BND
            }
            // XRELEASE on a plain store: MOV m, r / MOV m, imm.
            return byte == 0xF3 && insn.hasMemoryModRM && form.mnemonic == "mov" && form.encoding == .legacy
                && [0x88, 0x89, 0xC6, 0xC7].contains(insn.opcode) && form.map == .oneByte
        case 0x26, 0x2E, 0x36, 0x3E:
            // Ignored in 64-bit mode, except as branch hints (2E/3E on Jcc) and NOTRACK (3E).
            if form.flow == .jcc { return byte == 0x2E || byte == 0x3E }
            return byte == 0x3E && (form.flow == .ijmp || form.flow == .icall)
        case 0x64, 0x65:
            return memory
        case 0x40...0x4F:
            return rexTakesEffect(byte, insn, form)
        default:
            return true
        }
    }

    private static func rexTakesEffect(_ rex: UInt8, _ insn: Instruction, _ form: Form) -> Bool {
        if insn.prefixes.contains(.ignoredREX) && insn.rex != rex { return false }
        let registerOperandInRM = !insn.hasMemoryModRM && form.operands.contains {
            $0.kind.location == .modrmRegister || $0.kind.location == .modrmRegisterOrMemory
        }
        // Any REX turns AH, CH, DH, BH into SPL, BPL, SIL, DIL.
        let byteRegisters = form.operands.contains { operand in
            guard operand.kind.registerClass == .gpr8 else { return false }
            switch operand.kind.location {
            case .modrmReg: return (insn.modrm >> 3) & 7 >= 4
            case .modrmRegister, .modrmRegisterOrMemory: return !insn.hasMemoryModRM && insn.modrm & 7 >= 4
            case .opcodeRegister: return insn.opcode & 7 >= 4
            default: return false
            }
        }
        if byteRegisters { return true }
        if rex & 8 != 0 {
            let sizeSelected = form.operandSize == 64 && !form.classes.contains(.default64) && !form.classes.contains(.intelForce64)
            let fixesBranch = form.classes.contains(.intelForce64) && insn.prefixes.contains(.operandSize)
            if sizeSelected || fixesBranch || form.classes.contains(.segmentLoad) { return true }
        }
        if rex & 4 != 0 && form.operands.contains(where: { $0.kind.location == .modrmReg && $0.kind.registerClass != .none }) {
            return true
        }
        if rex & 2 != 0 && insn.sibOffset != 0 { return true }
        if rex & 1 != 0 {
            let usesB = insn.hasMemoryModRM || registerOperandInRM
                || form.operands.contains { $0.kind.location == .opcodeRegister }
            if usesB { return true }
        }
        return false
    }
}
