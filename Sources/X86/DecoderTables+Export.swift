/// The decoder's tables as plain values, for code generators: the standalone C verifier decodes
/// with exactly these tables and the same algorithm as `Decoder`.
public struct DecoderTableExport: Sendable {
    public struct Entry: Sendable {
        public let start: UInt32
        public let count: UInt16
        public let hasModRM: Bool
        public let modIgnored: Bool
    }

    public struct Pattern: Sendable {
        public let allowed: UInt64
        public let form: UInt16
        /// 0 normal, 1 default 64, 2 always 64, 3 mandatory 66 (see `DecoderTables.OperandSizeRule`).
        public let sizeRule: UInt8
    }

    /// What the decoder checks once a form matched, as flags and small numbers.
    public struct FormFacts: Sendable {
        public let immediateBytes: UInt8
        public let hasMoffs: Bool
        public let usesVVVV: Bool
        public let vsib: Bool
        public let classes: UInt32
        /// Register-number checks and, for VEX/EVEX/XOP, the bits the form uses (bits: `RegisterCheck`).
        public let registerChecks: UInt16
        /// 0: none; 1: all register operands distinct; 2: the destination differs from the sources.
        public let distinct: UInt8
        /// Operand places for the distinct check, in operand order: 1 reg, 2 rm, 3 vvvv, 4 vsib index.
        public let distinctPlaces: [UInt8]
        /// `DecoderTables.PrefixUse` bits, for redundant-prefix analysis.
        public let prefixUse: UInt16
    }

    public enum RegisterCheck {
        public static let controlInReg: UInt8 = 1, debugInReg: UInt8 = 2, opmaskInReg: UInt8 = 4, opmaskInVVVV: UInt8 = 8
        public static let tileInReg: UInt8 = 16, tileInVVVV: UInt8 = 32, tileInRM: UInt8 = 64, evexGPRInReg: UInt8 = 128
        /// Canonical encodings (`Decoder.ignoredVectorBits`), shifted by 8: W ignored (WIG), L ignored (LIG), R,
        /// B (register form) and EVEX X (a vector ModRM.rm register) extend an operand, imm8[3:0] ignored (is4).
        public static let wIgnored: UInt16 = 1 << 8, lIgnored: UInt16 = 1 << 9, regExtended: UInt16 = 1 << 10
        public static let rmExtended: UInt16 = 1 << 11, rmVector: UInt16 = 1 << 12, is4Low: UInt16 = 1 << 13
    }

    public let entries: [Entry]
    public let patterns: [Pattern]
    public let forms: [FormFacts]
    /// Bit positions of the operand-size and W fields in a pattern's `allowed` mask.
    public static let sizeShift = DecoderTables.sizeShift, wShift = DecoderTables.wShift
    /// Bit position of the ModRM.reg field (8 bits, one per value) in a pattern's `allowed` mask.
    public static let regShift = DecoderTables.regShift
    /// Bit positions of the fields the core sets from the prefixes (`KEY(S_PFX, ...)` and the others in core.c).
    public static let prefixShift = DecoderTables.prefixShift, addressShift = DecoderTables.addressShift
    public static let lShift = DecoderTables.lShift, rexBShift = DecoderTables.rexBShift

    /// The operand-size field value (0: 16, 1: 32, 2: 64) a pattern's `sizeRule` selects under REX.W and 66.
    public static func operandSizeValue(_ sizeRule: UInt8, rexW: Bool, has66: Bool) -> UInt64 {
        DecoderTables.operandSizeValue(DecoderTables.OperandSizeRule(rawValue: sizeRule) ?? .normal, rexW: rexW, has66: has66)
    }

    public static let mapNames = ["legacy 1-byte", "legacy 0F", "legacy 0F38", "legacy 0F3A", "3DNow! 0F0F", "VEX 0F", "VEX 0F38",
                                  "VEX 0F3A", "EVEX 0F", "EVEX 0F38", "EVEX 0F3A", "EVEX map5", "EVEX map6", "XOP 8", "XOP 9", "XOP A"]
}

extension Decoder {
    public var tableExport: DecoderTableExport {
        let t = tables
        let entries = (0..<t.entries.count).map { i in
            DecoderTableExport.Entry(start: t.entries[i].start, count: t.entries[i].count, hasModRM: t.entries[i].hasModRM,
                                     modIgnored: t.entries[i].modIgnored)
        }
        let patterns = (0..<t.patterns.count).map { i in
            DecoderTableExport.Pattern(allowed: t.patterns[i].allowed, form: t.patterns[i].form, sizeRule: t.patterns[i].sizeRule.rawValue)
        }
        let forms = database.forms.map { form -> DecoderTableExport.FormFacts in
            let f = t.facts[form.index]
            // `VectorBitUse` above the register checks (the same bit order; a test keeps them equal).
            var checks = UInt16(f.vectorBits.rawValue) << 8
            typealias R = DecoderTableExport.RegisterCheck
            for operand in form.operands {
                switch (operand.kind.registerClass, operand.kind.location) {
                case (.control, .modrmReg): checks |= UInt16(R.controlInReg)
                case (.debug, .modrmReg): checks |= UInt16(R.debugInReg)
                case (.opmask, .modrmReg): checks |= UInt16(R.opmaskInReg)
                case (.opmask, .vvvv): checks |= UInt16(R.opmaskInVVVV)
                case (.tile, .modrmReg): checks |= UInt16(R.tileInReg)
                case (.tile, .vvvv): checks |= UInt16(R.tileInVVVV)
                case (.tile, .modrmRegister): checks |= UInt16(R.tileInRM)
                case (.gpr32, .modrmReg), (.gpr64, .modrmReg): if form.encoding == .evex { checks |= UInt16(R.evexGPRInReg) }
                default: break
                }
            }
            let distinct: UInt8 = form.classes.contains(.distinctRegisters) ? 1 : form.classes.contains(.distinctDestination) ? 2 : 0
            var places: [UInt8] = []
            if distinct != 0 {
                for operand in form.operands where operand.kind.registerClass != .opmask {
                    switch operand.kind.location {
                    case .modrmReg: places.append(1)
                    case .modrmRegister, .modrmRegisterOrMemory: places.append(2)
                    case .vvvv: places.append(3)
                    case .vsib: places.append(4)
                    default: break
                    }
                }
            }
            return DecoderTableExport.FormFacts(immediateBytes: f.immediateBytes, hasMoffs: f.hasMoffs, usesVVVV: f.usesVVVV, vsib: f.vsib,
                                                classes: f.classes.rawValue, registerChecks: checks, distinct: distinct,
                                                distinctPlaces: places, prefixUse: f.prefixUse.rawValue)
        }
        return DecoderTableExport(entries: entries, patterns: patterns, forms: forms)
    }
}
