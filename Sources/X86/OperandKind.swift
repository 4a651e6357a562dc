import Synchronization

/// An operand kind of the database (iced-x86's OpCodeOperandKind names), split into what the
/// verifier needs: which register file, and where in the encoding the operand lives.
public struct OperandKind: Sendable, Hashable, CustomStringConvertible {
    public enum RegisterClass: String, Sendable, CaseIterable {
        case none, gpr8, gpr16, gpr32, gpr64, mmx, xmm, ymm, zmm, opmask, tile, x87, segment, control, debug
    }

    public enum Location: String, Sendable {
        /// ModRM.reg (extended by REX.R / VEX.R / EVEX.R').
        case modrmReg
        /// ModRM.rm, register only (mod = 11).
        case modrmRegister
        /// ModRM.rm, register or memory.
        case modrmRegisterOrMemory
        /// ModRM.rm, memory only.
        case memory
        /// A vector-indexed memory operand (VSIB).
        case vsib
        /// AMX's SIB memory operand.
        case sibMemory
        case vvvv
        /// The opcode's low three bits (with REX.B).
        case opcodeRegister
        /// A register in imm8[7:4].
        case is4
        /// A register the form always uses (`al`, `cl`, `st0`, ...).
        case fixedRegister
        /// A memory operand addressed by fixed registers (`es:[rdi]`, `[rbx+al]`).
        case implicitMemory
        /// A moffs absolute address.
        case memoryOffset
        case immediate
        case branch
    }

    /// What the operand's value is: data, or (`r64_reg_mem`: UMONITOR, MOVDIR64B, ENQCMD) the
    /// address of a memory access that no memory operand shows.
    public enum Use: Sendable { case value, address }

    public let name: String
    public let registerClass: RegisterClass
    public let location: Location
    public var use: Use { name.hasSuffix("_reg_mem") ? .address : .value }

    public var description: String { name }
    public var isMemory: Bool {
        switch location {
        case .memory, .vsib, .sibMemory, .implicitMemory, .memoryOffset, .modrmRegisterOrMemory: true
        default: false
        }
    }

    /// The database names about a hundred kinds: each is parsed once.
    private static let cache = Mutex<[String: OperandKind]>([:])

    static func parsed(_ name: String) -> OperandKind? {
        if let known = cache.withLock({ $0[name] }) { return known }
        guard let kind = OperandKind(name) else { return nil }
        cache.withLock { $0[name] = kind }
        return kind
    }

    /// Parses a database operand kind; `nil` for a name the loader does not know.
    public init?(_ name: String) {
        self.name = name
        if let fixed = Self.fixed[name] {
            (registerClass, location) = fixed
            return
        }
        if name.hasPrefix("imm") { (registerClass, location) = (.none, .immediate); return }
        if name.hasPrefix("br") || name.hasPrefix("xbegin") { (registerClass, location) = (.none, .branch); return }
        if name.hasPrefix("mem_vsib") { (registerClass, location) = (.none, .vsib); return }
        let parts = name.split(separator: "_", maxSplits: 1).map(String.init)
        guard parts.count == 2, let file = Self.files[parts[0]], let place = Self.places[parts[1]] else { return nil }
        (registerClass, location) = (file, place)
    }

    private static let files: [String: RegisterClass] = [
        "r8": .gpr8, "r16": .gpr16, "r32": .gpr32, "r64": .gpr64, "mm": .mmx, "xmm": .xmm, "xmmp3": .xmm,
        "ymm": .ymm, "zmm": .zmm, "zmmp3": .zmm, "k": .opmask, "kp1": .opmask, "tmm": .tile, "seg": .segment,
        "cr": .control, "dr": .debug,
    ]
    private static let places: [String: Location] = [
        "reg": .modrmReg, "reg_mem": .modrmReg, "rm": .modrmRegister, "or_mem": .modrmRegisterOrMemory,
        "vvvv": .vvvv, "opcode": .opcodeRegister, "is4": .is4, "is5": .is4,
    ]
    private static let fixed: [String: (RegisterClass, Location)] = [
        "mem": (.none, .memory), "sibmem": (.none, .sibMemory), "mem_offs": (.none, .memoryOffset),
        "al": (.gpr8, .fixedRegister), "cl": (.gpr8, .fixedRegister), "ax": (.gpr16, .fixedRegister),
        "dx": (.gpr16, .fixedRegister), "eax": (.gpr32, .fixedRegister), "rax": (.gpr64, .fixedRegister),
        "st0": (.x87, .fixedRegister), "sti_opcode": (.x87, .modrmRegister),
        "fs": (.segment, .fixedRegister), "gs": (.segment, .fixedRegister),
        "es_rdi": (.none, .implicitMemory), "seg_rsi": (.none, .implicitMemory),
        "seg_rdi": (.none, .implicitMemory), "seg_rbx_al": (.none, .implicitMemory),
    ]
}
