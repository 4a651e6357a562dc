/// The decoder's tables, derived from the ISA database: one 256-entry table per opcode map,
/// each entry a short list of form patterns tried most specific first.
///
/// A pattern is a set of allowed values per encoding field (mod, reg, rm, mandatory prefix,
/// operand size, address size, W, L, REX.B), one bit per value. An instance is the same
/// fields with exactly one bit set in each; it matches when it sets no bit the pattern lacks.
final class DecoderTables: @unchecked Sendable {  // immutable after init
    struct Entry: Sendable {
        var start: UInt32 = 0
        var count: UInt16 = 0
        /// Whether the opcode takes a ModRM byte (the same for all its forms, checked on build).
        var hasModRM = false
        /// MOV CR/DR: ModRM.mod is ignored, the operand is a register, no SIB or displacement follows.
        var modIgnored = false
    }

    /// How a form turns the 66 and REX.W prefixes into the operand size it is selected by.
    enum OperandSizeRule: UInt8 {
        case normal = 0       // REX.W: 64, 66: 16, else 32
        case default64 = 1    // REX.W: 64, 66: 16, else 64 (push, pop, ...)
        case always64 = 2     // 64 whatever the prefixes (Intel's near branches, SGDT ...)
        case mandatory66 = 3  // 66 selects the form, not the size: REX.W: 64, else 32
    }

    struct Pattern: Sendable {
        var allowed: UInt64
        var form: UInt16
        var sizeRule: OperandSizeRule
    }

    /// Per-form facts the decoder needs once a pattern matched.
    struct FormFacts: Sendable {
        var immediateBytes: UInt8
        var hasMoffs: Bool
        var usesVVVV: Bool
        var vsib: Bool
        var classes: FormClasses
        /// Control/debug register or distinct-register operands: checked once the form is known.
        var checksRegisters: Bool
        /// What the form does with each prefix, for `Decoder.redundantPrefixes`.
        var prefixUse: PrefixUse
        /// A form `Decoder.refusal` may refuse whatever the prefixes before it: Intel's 64-bit near
        /// branches (66) and the far transfers and segment loads at FF and 0F B2/B4/B5 (REX.W).
        var mayBeRefused: Bool
        /// VEX/EVEX/XOP: which of the bits the CPU may ignore this form uses, for `Decoder.ignoredVectorBits`.
        var vectorBits: VectorBitUse
    }

    /// What a VEX/EVEX/XOP form does with the prefix bits a CPU can ignore: W, L, R, X, B and
    /// imm8[3:0] beside an is4 register. Sieve refuses an ignored bit that is set (DESIGN §8:
    /// ignored bits are where errata such as Reptar live). From the database's `w`, `l`, operand
    /// and immediate columns, never from mnemonic lists.
    struct VectorBitUse: OptionSet, Sendable {
        let rawValue: UInt8
        static let wIgnored = VectorBitUse(rawValue: 1 << 0)   // WIG: the `w` column is '-'
        static let lIgnored = VectorBitUse(rawValue: 1 << 1)   // LIG: the `l` column is '-'
        static let regExtended = VectorBitUse(rawValue: 1 << 2) // ModRM.reg names a register: R (EVEX R') may be set
        static let rmExtended = VectorBitUse(rawValue: 1 << 3)  // ModRM.rm names a register B extends (register form)
        static let rmVector = VectorBitUse(rawValue: 1 << 4)    // ... a vector register: EVEX.X is its fifth bit
        static let is4Low = VectorBitUse(rawValue: 1 << 5)      // imm8[7:4] names a register, imm8[3:0] is ignored

        init(rawValue: UInt8) { self.rawValue = rawValue }

        init(_ form: Form) {
            var use: VectorBitUse = []
            guard form.encoding == .vex || form.encoding == .evex || form.encoding == .xop else { self = use; return }
            // iced-x86's is_wig / is_lig (the generator writes '-' for them): flipping W or L decodes to the same form.
            if form.w == nil { use.insert(.wIgnored) }
            if form.l == nil { use.insert(.lIgnored) }
            for operand in form.operands {
                let file = operand.kind.registerClass
                switch operand.kind.location {
                case .modrmReg where file != .none:
                    use.insert(.regExtended)
                case .modrmRegister, .modrmRegisterOrMemory:
                    // Opmask registers are k0-k7: B names nothing there (MMX and x87 are not VEX operands).
                    switch file {
                    case .gpr8, .gpr16, .gpr32, .gpr64, .tile: use.insert(.rmExtended)
                    case .xmm, .ymm, .zmm: use.formUnion([.rmExtended, .rmVector])
                    case .none, .mmx, .opmask, .x87, .segment, .control, .debug: break
                    }
                default: break
                }
            }
            if form.immediates.contains(.is4) { use.insert(.is4Low) }
            self = use
        }
    }

    /// The prefixes and REX bits a form can make use of (beyond the ones that select it).
    struct PrefixUse: OptionSet, Sendable {
        let rawValue: UInt16
        static let operandSize = PrefixUse(rawValue: 1 << 0)     // 66 selects or sizes it
        static let addressSize = PrefixUse(rawValue: 1 << 1)     // 67 selects it or sizes a memory operand
        static let implicitMemory = PrefixUse(rawValue: 1 << 2)  // a memory operand outside ModRM
        static let repeats = PrefixUse(rawValue: 1 << 3)         // F2/F3 select it or repeat it
        static let bnd = PrefixUse(rawValue: 1 << 4)             // F2 is BND on a branch
        static let xrelease = PrefixUse(rawValue: 1 << 5)        // F3 is XRELEASE on a plain store
        static let branchHint = PrefixUse(rawValue: 1 << 6)      // 2E/3E are Jcc hints
        static let notrack = PrefixUse(rawValue: 1 << 7)         // 3E is NOTRACK on an indirect branch
        static let rexW = PrefixUse(rawValue: 1 << 8)            // REX.W selects a 64-bit form or pointer
        static let regOperand = PrefixUse(rawValue: 1 << 9)      // REX.R extends a ModRM.reg register
        static let rmOperand = PrefixUse(rawValue: 1 << 10)      // REX.B extends a ModRM.rm register
        static let opcodeRegister = PrefixUse(rawValue: 1 << 11) // REX.B extends the opcode's register
        static let byteRegister = PrefixUse(rawValue: 1 << 12)   // any REX turns AH..BH into SPL..DIL
        static let branch66 = PrefixUse(rawValue: 1 << 13)       // a near branch: REX.W fixes its 66
    }

    let entries: UnsafeMutableBufferPointer<Entry>
    let patterns: UnsafeMutableBufferPointer<Pattern>
    let facts: UnsafeMutableBufferPointer<FormFacts>
    /// Three masks per pattern, one per prefix context (none, 66, REX.W): the pattern's allowed
    /// bits where the operand size its rule gives in that context is allowed, else 0 (no match).
    let contextMasks: UnsafeMutableBufferPointer<UInt64>
    /// The `Prefixes` bit of each byte that is a legacy prefix, `.rex` for 40-4F, 0 otherwise.
    let prefixBits: UnsafeMutableBufferPointer<UInt16>
    /// The common case without the pattern search: a legacy one-byte or 0F opcode with no 67,
    /// F2 or F3 prefix, whose form then depends only on ModRM, 66 and REX.W/B. Per opcode, the
    /// start of its run in `directForms`, the run's size minus one (a power of two minus one,
    /// masking the `directIndex` bits that can matter), and the opcode's `Entry` facts: one load
    /// tells the decoder all it needs before the ModRM byte.
    let directRuns: UnsafeMutableBufferPointer<DirectRun>
    /// Per `directIndex` value: the form (low 16 bits, `noForm` where no pattern matches) and
    /// its immediate bytes (above), so that the instruction's length, on which the next
    /// instruction's decoding waits, needs no further load.
    let directForms: UnsafeMutableBufferPointer<UInt32>
    static let noForm: UInt32 = 0xFFFF
    /// Four `directForms` values per opcode, by REX.W and 66, for the opcodes whose form depends
    /// on nothing else (most do): addressed by the opcode alone, so this load does not wait for
    /// the run's. `useRun` where the form also depends on ModRM or REX.B.
    let directByPrefix: UnsafeMutableBufferPointer<UInt32>
    static let useRun: UInt32 = 0xFFFF_FFFF

    struct DirectRun {
        var start: UInt32
        var mask: UInt16
        var hasModRM: Bool
        var modIgnored: Bool
        /// Some form has this opcode.
        var defined: Bool
    }
    /// The tables the direct lookup covers (legacy one-byte and 0F).
    static let directTables = 2

    /// The direct lookup's index: REX.W, 66, register-vs-memory, ModRM.reg, ModRM.rm, REX.B, in
    /// that order from bit 0, so that the fields most forms depend on give the shortest runs.
    @inline(__always)
    static func directIndex(modrm: UInt8, takesModRM: Bool, rex: UInt8, has66: Bool) -> Int {
        let w = Int(rex >> 3) & 1, o16 = has66 ? 2 : 0, b = Int(rex & 1) << 9
        guard takesModRM else { return w | o16 | b }
        return w | o16 | (modrm >= 0xC0 ? 4 : 0) | Int((modrm >> 3) & 7) << 3 | Int(modrm & 7) << 6 | b
    }
    static let directIndexCount = 1024

    /// The first pattern of `entry` that the key matches in the prefix context (0 none, 1 66,
    /// 2 REX.W), as a form index; -1 when none does.
    @inline(__always)
    func search(_ entry: Entry, key: UInt64, context: Int) -> Int {
        Self.search(entry, key: key, context: context, masks: contextMasks, patterns: patterns)
    }

    @inline(__always)
    static func search(_ entry: Entry, key: UInt64, context: Int, masks contextMasks: UnsafeMutableBufferPointer<UInt64>,
                       patterns: UnsafeMutableBufferPointer<Pattern>) -> Int {
        var p = Int(entry.start)
        let last = p &+ Int(entry.count)
        while p < last {
            if key & ~contextMasks[p &* 3 &+ context] == 0 { return Int(patterns[p].form) }
            p &+= 1
        }
        return -1
    }

    /// The instance key (all fields but the operand size) of a legacy instruction.
    @inline(__always)
    static func legacyKey(modrm: UInt8, takesModRM: Bool, selector: UInt64, address32: Bool, rex: UInt8) -> UInt64 {
        var key: UInt64
        if takesModRM {
            key = (modrm >> 6 == 3 ? 1 : 2) << modShift
            key |= 1 << (regShift &+ UInt64((modrm >> 3) & 7))
            key |= 1 << (rmShift &+ UInt64(modrm & 7))
        } else {
            key = 1 << modShift | 1 << regShift | 1 << rmShift
        }
        key |= 1 << (prefixShift &+ selector)
        key |= 1 << (addressShift &+ (address32 ? 0 : 1))
        key |= 1 << (wShift &+ UInt64((rex >> 3) & 1))
        key |= 1 << lShift
        key |= 1 << (rexBShift &+ UInt64(rex & 1))
        return key
    }

    deinit {
        entries.deallocate()
        patterns.deallocate()
        facts.deallocate()
        contextMasks.deallocate()
        prefixBits.deallocate()
        directRuns.deallocate()
        directForms.deallocate()
        directByPrefix.deallocate()
    }

    // Bit positions of the instance/pattern fields.
    static let modShift: UInt64 = 0      // 2 bits: register, memory
    static let regShift: UInt64 = 2      // 8 bits
    static let rmShift: UInt64 = 10      // 8 bits
    static let prefixShift: UInt64 = 18  // 4 bits: none, 66, F3, F2
    static let sizeShift: UInt64 = 22    // 3 bits: 16, 32, 64
    static let addressShift: UInt64 = 25 // 2 bits: 32, 64
    static let wShift: UInt64 = 27       // 2 bits
    static let lShift: UInt64 = 29       // 4 bits: 0 1 2 3
    static let rexBShift: UInt64 = 33    // 2 bits

    /// Table index of an opcode map: legacy maps and 3DNow!, then VEX, EVEX and XOP maps.
    static let mapCount = 16
    static func tableIndex(_ encoding: Encoding, _ map: OpcodeMap) -> Int? {
        switch (encoding, map) {
        case (.legacy, .oneByte): 0
        case (.legacy, .map0F): 1
        case (.legacy, .map0F38): 2
        case (.legacy, .map0F3A): 3
        case (.threeDNow, _): 4
        case (.vex, .map0F): 5
        case (.vex, .map0F38): 6
        case (.vex, .map0F3A): 7
        case (.evex, .map0F): 8
        case (.evex, .map0F38): 9
        case (.evex, .map0F3A): 10
        case (.evex, .map5): 11
        case (.evex, .map6): 12
        case (.xop, .xop8): 13
        case (.xop, .xop9): 14
        case (.xop, .xopA): 15
        default: nil
        }
    }

    init(database: ISADatabase) {
        var lists = [[Pattern]](repeating: [], count: Self.mapCount * 256)
        var modrm = [Bool?](repeating: nil, count: Self.mapCount * 256)
        var modIgnored = [Bool](repeating: false, count: Self.mapCount * 256)
        var facts: [FormFacts] = []
        for form in database.forms {
            facts.append(FormFacts(
                immediateBytes: UInt8(form.immediates.compactMap(\.size).reduce(0, +)),
                hasMoffs: form.immediates.contains(.moffs),
                usesVVVV: form.usesVVVV,
                vsib: form.classes.contains(.vsib),
                classes: form.classes,
                checksRegisters: !form.classes.isDisjoint(with: [.distinctRegisters, .distinctDestination])
                    || form.operands.contains { [.control, .debug, .opmask, .tile].contains($0.kind.registerClass) }
                    || form.encoding == .evex && form.operands.contains {
                        $0.kind.location == .modrmReg && [.gpr32, .gpr64].contains($0.kind.registerClass)
                    },
                prefixUse: Self.prefixUse(form),
                mayBeRefused: form.classes.contains(.intelForce64) || form.encoding == .legacy
                    && (form.map == .oneByte && form.opcode == 0xFF || form.map == .map0F && [0xB2, 0xB4, 0xB5].contains(form.opcode)),
                vectorBits: VectorBitUse(form)))
            guard let table = Self.tableIndex(form.encoding, form.map) else {
                preconditionFailure("form \(form.id): no table for \(form.encoding) \(form.map)")
            }
            let pattern = Pattern(allowed: Self.allowed(form), form: UInt16(form.index), sizeRule: Self.sizeRule(form))
            let opcodes = form.opcodeAddsRegister ? Int(form.opcode)..<Int(form.opcode) + 8 : Int(form.opcode)..<Int(form.opcode) + 1
            for opcode in opcodes {
                let slot = table * 256 + opcode
                let takesModRM = form.modrm != nil
                if let known = modrm[slot], known != takesModRM {
                    preconditionFailure("form \(form.id): opcode \(opcode) mixes forms with and without ModRM")
                }
                modrm[slot] = takesModRM
                modIgnored[slot] = modIgnored[slot] || form.classes.contains(.modIgnored)
                lists[slot].append(pattern)
            }
        }
        var entries = [Entry](repeating: Entry(), count: Self.mapCount * 256)
        var patterns: [Pattern] = []
        for slot in lists.indices where !lists[slot].isEmpty {
            // Where no form of a family (same fields but the operand size) has a 64-bit operand
            // size (IN, OUT, INS, OUTS, XBEGIN, ...), REX.W selects nothing: the 32-bit form takes it.
            let size64: UInt64 = 1 << (Self.sizeShift + 2), size32: UInt64 = 1 << (Self.sizeShift + 1)
            let sizeMask: UInt64 = 7 << Self.sizeShift
            let families = Dictionary(grouping: lists[slot].indices) { lists[slot][$0].allowed & ~sizeMask }
            for members in families.values where !members.contains(where: { lists[slot][$0].allowed & size64 != 0 }) {
                for k in members where lists[slot][k].allowed & sizeMask == size32 {
                    lists[slot][k].allowed |= size64
                }
            }
            // A mandatory prefix first (F2 0F 38 F0 is CRC32, not MOVBE), then the most specific
            // pattern; the database order breaks ties, so the result is deterministic.
            let anyPrefix: UInt64 = 0xF << Self.prefixShift
            let sorted = lists[slot].enumerated().sorted {
                let ordinaryA = $0.element.allowed & anyPrefix == anyPrefix, ordinaryB = $1.element.allowed & anyPrefix == anyPrefix
                if ordinaryA != ordinaryB { return !ordinaryA }
                let a = $0.element.allowed.nonzeroBitCount, b = $1.element.allowed.nonzeroBitCount
                return a != b ? a < b : $0.offset < $1.offset
            }.map(\.element)
            entries[slot] = Entry(start: UInt32(patterns.count), count: UInt16(sorted.count),
                                  hasModRM: modrm[slot] ?? false, modIgnored: modIgnored[slot])
            patterns += sorted
        }
        self.entries = .allocate(capacity: entries.count)
        _ = self.entries.initialize(from: entries)
        self.patterns = .allocate(capacity: patterns.count)
        _ = self.patterns.initialize(from: patterns)
        self.facts = .allocate(capacity: facts.count)
        _ = self.facts.initialize(from: facts)
        contextMasks = .allocate(capacity: patterns.count * 3)
        for (k, pattern) in patterns.enumerated() {
            for context in 0..<3 {
                let size = Self.operandSizeValue(pattern.sizeRule, rexW: context == 2, has66: context == 1)
                let allowed = pattern.allowed & (1 << (Self.sizeShift + size)) != 0
                contextMasks[k * 3 + context] = allowed ? pattern.allowed : 0
            }
        }
        prefixBits = .allocate(capacity: 256)
        prefixBits.initialize(repeating: 0)
        let legacy: [(UInt8, Prefixes)] = [(0xF0, .lock), (0xF2, .repne), (0xF3, .rep), (0x66, .operandSize), (0x67, .addressSize),
                                          (0x26, .segmentES), (0x2E, .segmentCS), (0x36, .segmentSS), (0x3E, .segmentDS),
                                          (0x64, .segmentFS), (0x65, .segmentGS)]
        for (byte, bit) in legacy { prefixBits[Int(byte)] = bit.rawValue }
        for byte in 0x40...0x4F { prefixBits[byte] = Prefixes.rex.rawValue }

        // The direct lookup, derived from the search itself so that both always agree.
        directRuns = .allocate(capacity: Self.directTables * 256)
        var forms: [UInt32] = []
        let count = Self.directIndexCount
        directByPrefix = .allocate(capacity: Self.directTables * 256 * 4)
        var all = [UInt32](repeating: 0, count: count)
        for slot in 0..<Self.directTables * 256 {
            let entry = self.entries[slot]
            for index in 0..<count {
                let w = UInt8(index & 1), has66 = index & 2 != 0, register = index & 4 != 0
                let modrm = UInt8(register ? 0xC0 : 0) | UInt8((index >> 3) & 7) << 3 | UInt8((index >> 6) & 7)
                let rex = w << 3 | UInt8(index >> 9)
                let key = Self.legacyKey(modrm: modrm, takesModRM: entry.hasModRM, selector: has66 ? 1 : 0, address32: false, rex: rex)
                let context = w != 0 ? 2 : has66 ? 1 : 0
                let form = entry.count == 0 ? -1 : Self.search(entry, key: key, context: context, masks: contextMasks, patterns: self.patterns)
                // Without 67, a moffs operand is 8 bytes.
                let immediate = form < 0 ? 0 : UInt32(facts[form].immediateBytes) + (facts[form].hasMoffs ? 8 : 0)
                all[index] = form < 0 ? Self.noForm : UInt32(form) | immediate << 16
            }
            // The shortest run (a power of two) whose index bits decide every form.
            var size = count
            while size > 1 && (0..<count).allSatisfy({ all[$0] == all[$0 & (size / 2 - 1)] }) { size /= 2 }
            for k in 0..<4 { directByPrefix[slot * 4 + k] = size <= 4 ? all[k & (size - 1)] : Self.useRun }
            directRuns[slot] = DirectRun(start: UInt32(forms.count), mask: UInt16(size - 1), hasModRM: entry.hasModRM,
                                         modIgnored: entry.modIgnored, defined: entry.count != 0)
            forms += all[0..<size]
        }
        directForms = .allocate(capacity: forms.count)
        _ = directForms.initialize(from: forms)
    }

    /// The operand-size field value (0: 16, 1: 32, 2: 64) a size rule selects under REX.W and 66.
    static func operandSizeValue(_ rule: OperandSizeRule, rexW: Bool, has66: Bool) -> UInt64 {
        switch rule {
        case .normal: rexW ? 2 : has66 ? 0 : 1
        case .default64: rexW ? 2 : has66 ? 0 : 2
        case .always64: 2
        case .mandatory66: rexW ? 2 : 1
        }
    }

    private static func prefixUse(_ form: Form) -> PrefixUse {
        var use: PrefixUse = []
        let branch = form.flow.map { [.jmp, .ijmp, .jcc, .call, .icall, .ret].contains($0) } ?? false
        if form.operandSize == 16 || form.mandatoryPrefix == .p66 || form.classes.contains(.intelForce64) {
            use.insert(.operandSize)
        }
        if form.addressSize != nil { use.insert(.addressSize) }
        if form.operands.contains(where: { $0.kind.location == .implicitMemory || $0.kind.location == .memoryOffset }) {
            use.formUnion([.implicitMemory, .addressSize])
        }
        if form.mandatoryPrefix == .pF2 || form.mandatoryPrefix == .pF3 || form.classes.contains(.string) {
            use.insert(.repeats)
        }
        if branch { use.insert(.bnd) }
        if form.encoding == .legacy && form.map == .oneByte && form.mnemonic == "mov" && [0x88, 0x89, 0xC6, 0xC7].contains(form.opcode) {
            use.insert(.xrelease)
        }
        // Branch hints are defined on Jcc only (Intel SDM 2.1.1): on LOOP and JRCXZ the CPU ignores 2E/3E.
        let jcc = form.map == .oneByte ? (0x70...0x7F).contains(form.opcode) : form.map == .map0F && (0x80...0x8F).contains(form.opcode)
        if form.flow == .jcc && jcc { use.insert(.branchHint) }
        if form.flow == .ijmp || form.flow == .icall { use.insert(.notrack) }
        let defaults64 = form.classes.contains(.default64) || form.classes.contains(.intelForce64)
        if form.operandSize == 64 && !defaults64 || form.classes.contains(.segmentLoad) || form.classes.contains(.far) {
            use.insert(.rexW)
        }
        if form.classes.contains(.intelForce64) { use.insert(.branch66) }
        for operand in form.operands {
            switch operand.kind.location {
            case .modrmReg where operand.kind.registerClass != .none: use.insert(.regOperand)
            case .modrmRegister, .modrmRegisterOrMemory: use.insert(.rmOperand)
            case .opcodeRegister: use.insert(.opcodeRegister)
            default: break
            }
            if operand.kind.registerClass == .gpr8 { use.insert(.byteRegister) }
        }
        return use
    }

    private static func sizeRule(_ form: Form) -> OperandSizeRule {
        if form.mandatoryPrefix == .p66 { return .mandatory66 }
        if form.classes.contains(.intelForce64) || form.classes.contains(.force64) { return .always64 }
        if form.classes.contains(.default64) { return .default64 }
        return .normal
    }

    private static func allowed(_ form: Form) -> UInt64 {
        func field(_ shift: UInt64, _ width: UInt64, _ value: Int?) -> UInt64 {
            guard let value else { return ((1 << width) - 1) << shift }
            return 1 << (shift + UInt64(value))
        }
        var bits: UInt64 = 0
        if let m = form.modrm {
            switch m.mod {
            case .register: bits |= 1 << modShift
            case .memory: bits |= 2 << modShift
            case .any: bits |= 3 << modShift
            }
            bits |= UInt64(m.regs) << regShift
            bits |= UInt64(m.rms) << rmShift
        } else {
            bits |= field(modShift, 2, nil) | field(regShift, 8, nil) | field(rmShift, 8, nil)
        }
        switch form.mandatoryPrefix {
        case .ordinary: bits |= field(prefixShift, 4, nil)
        case .np: bits |= 1 << (prefixShift + 0)
        case .p66: bits |= 1 << (prefixShift + 1)
        case .pF3: bits |= 1 << (prefixShift + 2)
        case .pF2: bits |= 1 << (prefixShift + 3)
        }
        bits |= field(sizeShift, 3, form.operandSize.map { $0 == 16 ? 0 : $0 == 32 ? 1 : 2 })
        bits |= field(addressShift, 2, form.addressSize.map { $0 == 32 ? 0 : 1 })
        bits |= field(wShift, 2, form.w)
        if let l = form.l {
            bits |= 1 << (lShift + UInt64(l))
        } else {
            // Length-ignored forms still refuse the reserved lengths: VEX has two, EVEX three.
            bits |= (form.encoding == .evex ? 0b0111 : 0b1111) << lShift
        }
        // NOP and PAUSE are 90 only without REX.B: 41 90 exchanges r8 with rax.
        let nopAt90 = form.encoding == .legacy && form.map == .oneByte && form.opcode == 0x90 && !form.opcodeAddsRegister
        bits |= nopAt90 ? 1 << rexBShift : 3 << rexBShift
        return bits
    }
}
