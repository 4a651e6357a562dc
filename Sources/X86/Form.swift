/// One instruction form of the ISA database: an encoding pattern and what it means.
///
/// A form is what the policy language names (`form: add_rm32_r32`) and what the decoder
/// returns; an `Instruction` is one concrete occurrence of a form in machine code.
public struct Form: Sendable, Hashable {
    /// Position in `ISADatabase.forms`; the decoder's tables refer to forms by it.
    public let index: Int
    /// Stable id (iced-x86's `Code` name, lower case).
    public let id: String
    public let mnemonic: String
    public let encoding: Encoding
    public let map: OpcodeMap
    public let opcode: UInt8
    /// `XX+r`: the opcode's low three bits (with REX.B) name a register.
    public let opcodeAddsRegister: Bool
    /// `nil`: the form has no ModRM byte.
    public let modrm: ModRMPattern?
    public let mandatoryPrefix: MandatoryPrefix
    /// Operand-size attribute that selects the form (16, 32, 64).
    public let operandSize: Int?
    /// Address-size attribute that selects the form (32, 64).
    public let addressSize: Int?
    /// VEX/EVEX/XOP W bit that selects the form.
    public let w: Int?
    /// VEX/EVEX/XOP L (0: 128, 1: 256, 2: 512) that selects the form.
    public let l: Int?
    public let immediates: [Immediate]
    /// Size in bits of the memory operand, if any.
    public let memoryBits: Int?
    /// Element size in bits of an EVEX embedded broadcast, if the form can broadcast.
    public let broadcastBits: Int?
    public let vendor: Vendor
    /// A sample encoding of exactly this form (checked against iced-x86 by the generator).
    public let sample: [UInt8]
    public let operands: [Operand]
    public let implicitRegisters: [ImplicitRegister]
    /// CPUID feature flags, lower case (`sse2`, `avx512f`, `rtm`, ...).
    public let cpuid: [String]
    public let flow: FlowKind?
    public let classes: FormClasses
    /// EVEX compressed-displacement tuple type (`n16`, `n64b4`, ...).
    public let tupleType: String?

    /// The op-code string in SDM notation (`NP 0F AE /7`), as `sieve isa` lists it and policies select it.
    public let opcodeString: String
    /// The instruction in SDM notation (`CLFLUSH m8`).
    public let instructionString: String

    public var usesVVVV: Bool { operands.contains { $0.kind.location == .vvvv } }
    public var hasMemoryOperand: Bool { operands.contains { $0.kind.isMemory } }
}

public enum Encoding: String, Sendable, CaseIterable {
    case legacy, vex, evex, xop
    case threeDNow = "3dnow"
}

/// Opcode maps, one 256-entry decoding table each.
public enum OpcodeMap: String, Sendable, CaseIterable {
    case oneByte = "1b"
    case map0F = "0f"
    case map0F38 = "0f38"
    case map0F3A = "0f3a"
    case map5, map6
    case xop8, xop9, xopA = "xopa"
    case threeDNow = "0f0f"

    /// The map number a VEX/EVEX/XOP prefix selects (`mmmmm`).
    public var selector: UInt8? {
        switch self {
        case .map0F: 1
        case .map0F38: 2
        case .map0F3A: 3
        case .map5: 5
        case .map6: 6
        case .xop8: 8
        case .xop9: 9
        case .xopA: 10
        case .oneByte, .threeDNow: nil
        }
    }
}

public enum MandatoryPrefix: String, Sendable {
    /// Prefixes keep their ordinary meaning (66 is operand size, F3 is REP, ...).
    case ordinary = "-"
    /// None of 66, F2, F3 may be present.
    case np
    case p66 = "66"
    case pF3 = "f3"
    case pF2 = "f2"
}

public struct ModRMPattern: Sendable, Hashable {
    public enum Mod: Sendable, Hashable { case register, memory, any }
    public let mod: Mod
    /// The ModRM.reg and ModRM.rm values the form allows, one bit per value.
    public let regs: UInt8
    public let rms: UInt8

    /// The `/digit` of the form, when ModRM.reg takes exactly one value.
    public var reg: UInt8? { regs.nonzeroBitCount == 1 ? UInt8(regs.trailingZeroBitCount) : nil }
    public var rm: UInt8? { rms.nonzeroBitCount == 1 ? UInt8(rms.trailingZeroBitCount) : nil }
}

public enum Immediate: String, Sendable {
    case ib, iw, id, iq
    case rel8, rel16, rel32
    /// A memory offset of the address size (8 bytes, 4 with 0x67).
    case moffs
    /// A register in imm8[7:4] (is5: plus a 4-bit immediate in imm8[3:0]).
    case is4, is5

    /// Bytes the immediate takes; `nil` for moffs, whose size is the address size.
    public var size: Int? {
        switch self {
        case .ib, .rel8, .is4, .is5: 1
        case .iw, .rel16: 2
        case .id, .rel32: 4
        case .iq: 8
        case .moffs: nil
        }
    }
}

public enum Vendor: String, Sendable {
    case both = "intel-amd", amd, via
}

public enum FlowKind: String, Sendable, CaseIterable {
    case jmp, ijmp, jcc, call, icall, ret, int, xbegin, exception
}

/// One semantic attribute of a form, from the closed list the database header documents: what
/// `FormClasses` holds, as an enum so that a table compiler's `switch` over it is exhaustive.
public enum FormClass: Int, Sendable, CaseIterable {
    case far, string, stack, lockable, repeatable, repne, nonTemporal, gather, scatter, vsib, privileged,
         segmentLoad, io, cetTracked, default64, force64, opmask, opmaskRequired, zeroing, broadcast,
         roundingControl, suppressExceptions, sibMemory, serializing, nop, reservedNop
    /// A near branch whose 0x66 prefix Intel ignores and AMD honours (16-bit target or size).
    case intelForce64
    /// ModRM.mod is ignored (MOV CR/DR): always a register, never a SIB or displacement.
    case modIgnored
    /// #UD unless the register operands differ (VSIB gathers, AMX tile operations).
    case distinctRegisters
    /// #UD unless the destination register differs from every source register.
    case distinctDestination
    /// #UD with a 0x66 prefix.
    case no66
    /// #UD with an F2 or F3 prefix.
    case noF2F3

    /// The database's spelling.
    public var name: String {
        switch self {
        case .far: "far"
        case .string: "string"
        case .stack: "stack"
        case .lockable: "lock"
        case .repeatable: "rep"
        case .repne: "repne"
        case .nonTemporal: "nt"
        case .gather: "gather"
        case .scatter: "scatter"
        case .vsib: "vsib"
        case .privileged: "priv"
        case .segmentLoad: "segload"
        case .io: "io"
        case .cetTracked: "cet-tracked"
        case .default64: "default64"
        case .force64: "force64"
        case .opmask: "opmask"
        case .opmaskRequired: "opmask-required"
        case .zeroing: "zeroing"
        case .broadcast: "bcst"
        case .roundingControl: "er"
        case .suppressExceptions: "sae"
        case .sibMemory: "sibmem"
        case .serializing: "serializing"
        case .nop: "nop"
        case .reservedNop: "reserved-nop"
        case .intelForce64: "intel-force64"
        case .modIgnored: "mod-ignored"
        case .distinctRegisters: "distinct-registers"
        case .distinctDestination: "distinct-destination"
        case .no66: "no66"
        case .noF2F3: "nfx"
        }
    }
}

/// Semantic attributes of a form (`FormClass`), one bit each.
public struct FormClasses: OptionSet, Sendable, Hashable {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    public init(_ c: FormClass) { rawValue = 1 << UInt32(c.rawValue) }

    public static let far = FormClasses(.far)
    public static let string = FormClasses(.string)
    public static let stack = FormClasses(.stack)
    public static let lockable = FormClasses(.lockable)
    public static let repeatable = FormClasses(.repeatable)
    public static let repne = FormClasses(.repne)
    public static let nonTemporal = FormClasses(.nonTemporal)
    public static let gather = FormClasses(.gather)
    public static let scatter = FormClasses(.scatter)
    public static let vsib = FormClasses(.vsib)
    public static let privileged = FormClasses(.privileged)
    public static let segmentLoad = FormClasses(.segmentLoad)
    public static let io = FormClasses(.io)
    public static let cetTracked = FormClasses(.cetTracked)
    public static let default64 = FormClasses(.default64)
    public static let force64 = FormClasses(.force64)
    public static let opmask = FormClasses(.opmask)
    public static let opmaskRequired = FormClasses(.opmaskRequired)
    public static let zeroing = FormClasses(.zeroing)
    public static let broadcast = FormClasses(.broadcast)
    public static let roundingControl = FormClasses(.roundingControl)
    public static let suppressExceptions = FormClasses(.suppressExceptions)
    public static let sibMemory = FormClasses(.sibMemory)
    public static let serializing = FormClasses(.serializing)
    public static let nop = FormClasses(.nop)
    public static let reservedNop = FormClasses(.reservedNop)
    public static let intelForce64 = FormClasses(.intelForce64)
    public static let modIgnored = FormClasses(.modIgnored)
    public static let distinctRegisters = FormClasses(.distinctRegisters)
    public static let distinctDestination = FormClasses(.distinctDestination)
    public static let no66 = FormClasses(.no66)
    public static let noF2F3 = FormClasses(.noF2F3)

    /// The database's spelling of each class.
    public static let names: [(String, FormClasses)] = FormClass.allCases.map { ($0.name, FormClasses($0)) }

    public var names: [String] { Self.names.filter { contains($0.1) }.map(\.0) }
    /// The classes the form has, in declaration order.
    public var members: [FormClass] { FormClass.allCases.filter { contains(FormClasses($0)) } }
}

public enum Access: String, Sendable {
    case none = "-", read = "r", write = "w", readWrite = "rw"
    case conditionalRead = "cr", conditionalWrite = "cw", readConditionalWrite = "rcw"

    public var writes: Bool { self == .write || self == .readWrite || self == .conditionalWrite || self == .readConditionalWrite }
    public var reads: Bool { self == .read || self == .readWrite || self == .conditionalRead || self == .readConditionalWrite }
}

public struct Operand: Sendable, Hashable {
    public let kind: OperandKind
    public let access: Access
}

public struct ImplicitRegister: Sendable, Hashable {
    public let register: String
    public let access: Access
}
