import CZydis

/// One instruction as Zydis decodes it in 64-bit mode, with every operand: explicit, implicit and
/// hidden. The specification reads nothing else: no table or decoder of Sieve's own.
struct ZydisInstruction {
    let offset: Int
    let raw: sieve_spec_instruction
    let operands: [sieve_spec_operand]

    /// Decodes the instruction at `offset`, or nil when Zydis finds no valid instruction there.
    init?(_ code: [UInt8], at offset: Int) {
        var raw = sieve_spec_instruction()
        let decoded = code.withUnsafeBufferPointer { buffer in
            sieve_spec_decode(buffer.baseAddress! + offset, buffer.count - offset, &raw)
        }
        guard decoded != 0, raw.length > 0 else { return nil }
        self.offset = offset
        self.raw = raw
        let count = min(Int(raw.operand_count), Int(ZYDIS_MAX_OPERAND_COUNT))
        operands = withUnsafeBytes(of: raw.operands) { Array($0.bindMemory(to: sieve_spec_operand.self).prefix(count)) }
    }

    var length: Int { Int(raw.length) }
    var end: Int { offset + length }
    var mnemonic: ZydisMnemonic { raw.mnemonic }
    var category: ZydisInstructionCategory { raw.category }
    var name: String { String(cString: sieve_spec_mnemonic_name(raw.mnemonic)) }
    var explicitOperands: [sieve_spec_operand] { operands.filter { $0.visibility == ZYDIS_OPERAND_VISIBILITY_EXPLICIT } }
    func has(_ attribute: UInt64) -> Bool { raw.attributes & attribute != 0 }
}

extension sieve_spec_operand {
    var isRegister: Bool { type == ZYDIS_OPERAND_TYPE_REGISTER }
    var isMemory: Bool { type == ZYDIS_OPERAND_TYPE_MEMORY }
    var isImmediate: Bool { type == ZYDIS_OPERAND_TYPE_IMMEDIATE }
    var reads: Bool { actions & (ZYDIS_OPERAND_ACTION_READ.rawValue | ZYDIS_OPERAND_ACTION_CONDREAD.rawValue) != 0 }
    var writes: Bool { actions & (ZYDIS_OPERAND_ACTION_WRITE.rawValue | ZYDIS_OPERAND_ACTION_CONDWRITE.rawValue) != 0 }
    /// Written on every execution (Zydis WRITE, and not only CONDWRITE).
    var writesAlways: Bool {
        actions & ZYDIS_OPERAND_ACTION_WRITE.rawValue != 0 && actions & ZYDIS_OPERAND_ACTION_CONDWRITE.rawValue == 0
    }
    var registerClass: ZydisRegisterClass { sieve_spec_register_class(reg) }
}

/// The sixteen general-purpose registers, by their 64-bit number (RAX 0 ... R15 15).
enum GPR {
    static let rsp = 4, rbp = 5, rsi = 6, rdi = 7, r15 = 15

    /// The 64-bit register number of any general-purpose register (AL, AH, AX, EAX -> 0), else nil.
    static func number(_ register: ZydisRegister) -> Int? {
        let cls = sieve_spec_register_class(register)
        guard cls == ZYDIS_REGCLASS_GPR8 || cls == ZYDIS_REGCLASS_GPR16 || cls == ZYDIS_REGCLASS_GPR32
                || cls == ZYDIS_REGCLASS_GPR64 else { return nil }
        let whole = sieve_spec_register_64(register).rawValue
        guard whole >= ZYDIS_REGISTER_RAX.rawValue, whole <= ZYDIS_REGISTER_R15.rawValue else { return nil }
        return Int(whole - ZYDIS_REGISTER_RAX.rawValue)
    }

    static func name(_ register: ZydisRegister) -> String { "%" + String(cString: sieve_spec_register_name(register)) }
    static func name64(_ number: Int) -> String { name(ZydisRegister(rawValue: ZYDIS_REGISTER_RAX.rawValue + UInt32(number))) }
}
