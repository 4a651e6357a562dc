/// One decoded instruction: its form, its length and the facts of this encoding
/// (prefixes, ModRM, register extensions) that policies and sandbox rules look at.
public struct Instruction: Sendable, Equatable {
    public init() {}

    @inlinable public var length: Int { Int(length8) }
    @inlinable public var formIndex: Int { Int(form16) }

    @usableFromInline var length8: UInt8 = 0
    @usableFromInline var form16: UInt16 = 0
    /// Why Sieve refuses it although a CPU executes it.
    public internal(set) var refusal: Refusal?
    public internal(set) var prefixes = Prefixes()
    /// One bit per prefix byte (bit k: the instruction's k-th byte) that has no effect: see
    /// `Decoder.redundantPrefixes`. The prefixes themselves, in order, are the bytes before `opcodeOffset`.
    public internal(set) var redundantPrefixes: UInt16 = 0
    /// The REX byte that takes effect (0: none; an ignored REX is not here: see `prefixes`).
    public internal(set) var rex: UInt8 = 0
    /// VEX/EVEX/XOP fields, decoded (not inverted); zero for legacy encodings.
    public internal(set) var vector = VectorFields()
    /// Offsets from the instruction's first byte; 0 means absent (offset 0 is always a prefix or opcode).
    public internal(set) var opcodeOffset: UInt8 = 0
    public internal(set) var modrmOffset: UInt8 = 0
    public internal(set) var sibOffset: UInt8 = 0
    public internal(set) var displacementOffset: UInt8 = 0
    public internal(set) var displacementSize: UInt8 = 0
    public internal(set) var immediateOffset: UInt8 = 0
    public internal(set) var immediateSize: UInt8 = 0
    /// ModRM, SIB and opcode byte values, copied so that no later reader needs the code buffer.
    public internal(set) var modrm: UInt8 = 0
    public internal(set) var sib: UInt8 = 0
    public internal(set) var opcode: UInt8 = 0

    @inlinable public var hasModRM: Bool { modrmOffset != 0 }
    /// Legacy prefixes and REX bytes: the instruction's first `prefixCount` bytes.
    @inlinable public var prefixCount: Int { Int(opcodeOffset) }
    @inlinable public var hasRedundantPrefix: Bool { redundantPrefixes != 0 }
    /// The ModRM form actually used: memory (mod != 11) or register.
    @inlinable public var hasMemoryModRM: Bool { hasModRM && modrm >> 6 != 3 }
    @inlinable public var rexW: Bool { rex & 8 != 0 }
    /// Effective operand size attribute of a legacy instruction (16, 32 or 64), before the form's own rules.
    @inlinable public var addressSize: Int { prefixes.contains(.addressSize) ? 32 : 64 }
}

public enum Refusal: String, Sendable, Equatable {
    /// A REX prefix followed by another prefix: the CPU ignores it, a reader may not.
    case rexNotLast = "REX prefix not directly before the opcode"
    /// 0x66 on a near branch: Intel ignores it, AMD truncates the target to 16 bits.
    case operandSizeOnNearBranch = "0x66 on a near branch: Intel and AMD disagree on its length or target"
    /// Far JMP/CALL with REX.W: m16:64 on Intel, m16:32 on AMD.
    case rexWFarTransfer = "REX.W on a far jump or call: Intel and AMD disagree on the pointer size"
    /// LSS/LFS/LGS with REX.W: m16:64 on Intel, m16:32 on AMD.
    case rexWSegmentLoad = "REX.W on LSS/LFS/LGS: Intel and AMD disagree on the pointer size"
    /// Canonical encodings only: bits the CPU ignores are where errata live, and NaCl refuses them too.
    case ignoredVectorW = "VEX/EVEX/XOP.W set on an instruction that ignores W (WIG)"
    case ignoredVectorL = "VEX.L or EVEX.L'L set on an instruction that ignores the vector length (LIG)"
    case unusedVectorR = "VEX/EVEX/XOP.R (or EVEX.R') set where ModRM.reg names no register"
    case unusedVectorX = "VEX/EVEX/XOP.X set where there is no SIB index (or EVEX vector ModRM.rm register) to extend"
    case unusedVectorB = "VEX/EVEX/XOP.B set where there is no base or ModRM.rm register to extend"
    case ignoredIs4Bits = "imm8[3:0] set beside an imm8[7:4] register operand: the CPU ignores them"
}

/// The legacy prefixes present, in any order; `Instruction.prefixBytes` gives them in order.
@frozen public struct Prefixes: OptionSet, Sendable, Equatable {
    public let rawValue: UInt16
    @inlinable public init(rawValue: UInt16) { self.rawValue = rawValue }

    @inlinable public static var lock: Prefixes { Prefixes(rawValue: 1 << 0) }
    @inlinable public static var rep: Prefixes { Prefixes(rawValue: 1 << 1) }           // F3
    @inlinable public static var repne: Prefixes { Prefixes(rawValue: 1 << 2) }         // F2
    @inlinable public static var operandSize: Prefixes { Prefixes(rawValue: 1 << 3) }   // 66
    @inlinable public static var addressSize: Prefixes { Prefixes(rawValue: 1 << 4) }   // 67
    @inlinable public static var segmentES: Prefixes { Prefixes(rawValue: 1 << 5) }
    @inlinable public static var segmentCS: Prefixes { Prefixes(rawValue: 1 << 6) }
    @inlinable public static var segmentSS: Prefixes { Prefixes(rawValue: 1 << 7) }
    @inlinable public static var segmentDS: Prefixes { Prefixes(rawValue: 1 << 8) }
    @inlinable public static var segmentFS: Prefixes { Prefixes(rawValue: 1 << 9) }
    @inlinable public static var segmentGS: Prefixes { Prefixes(rawValue: 1 << 10) }
    /// A REX byte is present (effective or ignored).
    @inlinable public static var rex: Prefixes { Prefixes(rawValue: 1 << 11) }
    /// A REX byte is present but ignored: it is not the last prefix.
    @inlinable public static var ignoredREX: Prefixes { Prefixes(rawValue: 1 << 12) }
    /// The last of F2/F3 is F3 (the one that takes effect when both are present).
    @inlinable public static var lastIsF3: Prefixes { Prefixes(rawValue: 1 << 13) }

    @inlinable public static var segments: Prefixes { Prefixes(rawValue: 0x3E0) }
    /// Every legacy prefix: LOCK, F2, F3, 66, 67 and the segments (not REX).
    @inlinable public static var legacy: Prefixes { Prefixes(rawValue: 0x7FF) }
}

public struct VectorFields: Sendable, Equatable {
    /// ModRM.reg extension (R, and R' for EVEX): added to ModRM.reg as bits 3-4.
    public internal(set) var r: UInt8 = 0
    /// SIB.index or (EVEX, mod=11) ModRM.rm bit 4 extension.
    public internal(set) var x: UInt8 = 0
    public internal(set) var b: UInt8 = 0
    public internal(set) var vvvv: UInt8 = 0
    public internal(set) var w: UInt8 = 0
    public internal(set) var l: UInt8 = 0
    public internal(set) var pp: UInt8 = 0
    public internal(set) var map: UInt8 = 0
    /// EVEX only: opmask register, zeroing, broadcast / rounding / SAE bit.
    public internal(set) var aaa: UInt8 = 0
    public internal(set) var z: Bool = false
    public internal(set) var broadcast: Bool = false
}

public enum InvalidReason: String, Sendable, Equatable {
    case truncated = "the instruction runs past the end of the code"
    case tooLong = "longer than 15 bytes"
    case undefined = "no instruction has this encoding"
    case lockNotAllowed = "LOCK on an instruction or operand that cannot be locked"
    case prefixBeforeVEX = "66, F2, F3, LOCK or REX before a VEX, EVEX or XOP prefix"
    case reservedBits = "reserved bits of a VEX, EVEX or XOP prefix are set"
    case unusedVVVV = "vvvv names a register the instruction has no operand for"
    case badEVEXMasking = "EVEX masking, broadcast or rounding the instruction does not support"
    case sameRegisters = "register operands that must differ are the same"
}

/// What the decoder says about the bytes at one offset.
public enum Decoded: Sendable, Equatable {
    case instruction(Instruction)
    case invalid(InvalidReason)
}
