/// The registers a decoded instruction names, by their assembler names: what a policy's
/// `register:` selector compares against (exactly: `ah` is not `ax`, and REX turns AH into SPL).
extension Decoder {
    /// Explicit register operands in operand order, then the form's implicit registers.
    /// Memory addressing registers (base, index) are not operands and are not listed.
    public func registers(of insn: Instruction) -> [String] {
        let form = database.forms[insn.formIndex]
        var names: [String] = []
        for operand in form.operands {
            if let name = registerName(operand.kind, insn) { names.append(name) }
        }
        for implicit in form.implicitRegisters where !names.contains(implicit.register) {
            names.append(implicit.register)
        }
        return names
    }

    /// The size in bits of the instruction's data operand: its memory operand where it has one
    /// (FIST m16int is 16), else its first register operand (RDSEED r32 is 32).
    public func operandSize(of insn: Instruction) -> Int? {
        Self.operandSize(database.forms[insn.formIndex], memoryModRM: insn.hasMemoryModRM)
    }

    /// The data-operand size of a form's encodings whose ModRM names memory, or a register.
    public static func operandSize(_ form: Form, memoryModRM: Bool) -> Int? {
        let memory = memoryModRM
            || form.operands.contains { [.memory, .vsib, .sibMemory, .implicitMemory, .memoryOffset].contains($0.kind.location) }
        if memory, let bits = form.memoryBits { return bits }
        for operand in form.operands {
            if operand.kind.location == .modrmRegisterOrMemory && memoryModRM { continue }
            if let bits = registerBits[operand.kind.registerClass] { return bits }
        }
        return form.memoryBits
    }

    public static let registerBits: [OperandKind.RegisterClass: Int] = [
        .gpr8: 8, .gpr16: 16, .gpr32: 32, .gpr64: 64, .mmx: 64, .xmm: 128, .ymm: 256, .zmm: 512,
        .opmask: 64, .x87: 80, .segment: 16, .control: 64, .debug: 64, .tile: 8192,
    ]

    private func registerName(_ kind: OperandKind, _ insn: Instruction) -> String? {
        let v = insn.vector
        let number: Int
        switch kind.location {
        case .fixedRegister:
            return kind.name
        case .modrmReg:
            number = Int((insn.modrm >> 3) & 7 | v.r << 3)
        case .modrmRegister, .modrmRegisterOrMemory:
            if insn.hasMemoryModRM { return nil }
            number = Int(insn.modrm & 7 | v.b << 3) | (kind.registerClass.isVector ? Int(v.x) << 4 : 0)
        case .vvvv:
            number = Int(v.vvvv)
        case .opcodeRegister:
            number = Int(insn.opcode & 7 | v.b << 3)
        default:
            return nil
        }
        return Self.name(kind.registerClass, number, anyREX: insn.rex != 0)
    }

    /// The assembler name of register `number` of a register file.
    public static func name(_ file: OperandKind.RegisterClass, _ number: Int, anyREX: Bool) -> String? {
        let legacy = ["ax", "cx", "dx", "bx", "sp", "bp", "si", "di"]
        switch file {
        case .gpr8:
            if number >= 8 { return "r\(number)b" }
            if number >= 4 && !anyREX { return ["ah", "ch", "dh", "bh"][number - 4] }
            return ["al", "cl", "dl", "bl", "spl", "bpl", "sil", "dil"][number]
        case .gpr16: return number >= 8 ? "r\(number)w" : legacy[number]
        case .gpr32: return number >= 8 ? "r\(number)d" : "e" + legacy[number]
        case .gpr64: return number >= 8 ? "r\(number)" : "r" + legacy[number]
        case .mmx: return "mm\(number & 7)"
        case .xmm: return "xmm\(number)"
        case .ymm: return "ymm\(number)"
        case .zmm: return "zmm\(number)"
        case .opmask: return "k\(number & 7)"
        case .tile: return "tmm\(number & 7)"
        case .x87: return "st\(number & 7)"
        case .segment: return number < 6 ? ["es", "cs", "ss", "ds", "fs", "gs"][number] : nil
        case .control: return "cr\(number)"
        case .debug: return "dr\(number)"
        case .none: return nil
        }
    }
}

extension OperandKind.RegisterClass {
    public var isVector: Bool { self == .xmm || self == .ymm || self == .zmm }
}
