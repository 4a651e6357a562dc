/// The strict x86-64 decoder: prefixes, opcode maps, ModRM/SIB, displacement and immediate,
/// then the form, from tables derived from the ISA database.
///
/// Two layers: bytes a CPU does not execute are `.invalid`; an instruction a CPU executes but
/// Sieve will not accept (vendor-dependent length or meaning, an ignored REX) decodes with a
/// `refusal`. It reads only inside the buffer it is given, whatever the bytes.
public struct Decoder: Sendable {
    public let database: ISADatabase
    let tables: DecoderTables

    /// Which decoded instructions carry `redundantPrefixes` (a little work per prefixed
    /// instruction; a verifier whose policy never asks can skip it).
    public let redundancy: RedundancyAnalysis

    public enum RedundancyAnalysis: Sendable {
        /// None: `redundantPrefixes` is always 0 (`redundantPrefixes(of:code:)` computes it on demand).
        case off
        /// Every instruction with a prefix.
        case all
    }

    public init(database: ISADatabase = .shared, redundancy: RedundancyAnalysis = .all) {
        self.database = database
        self.tables = database === ISADatabase.shared && Self.sharedTables != nil ? Self.sharedTables! : DecoderTables(database: database)
        self.redundancy = redundancy
    }

    /// One copy of the compiled-in database's tables for every decoder.
    private static let sharedTables: DecoderTables? = DecoderTables(database: .shared)

    /// The same decoder without the redundant-prefix analysis.
    public static let withoutRedundancy = Decoder(redundancy: .off)

    /// The decoder over the compiled-in database.
    public static let shared = Decoder()

    public func form(of instruction: Instruction) -> Form { database.forms[instruction.formIndex] }

    public func decode(_ bytes: [UInt8], at offset: Int = 0) -> Decoded {
        bytes.withUnsafeBytes { decode($0, at: offset) }
    }

    /// Decodes the instruction starting at `offset`; reads no byte outside `code`.
    public func decode(_ code: UnsafeRawBufferPointer, at offset: Int) -> Decoded {
        guard offset >= 0, offset < code.count, let base = code.baseAddress else { return .invalid(.truncated) }
        var insn = Instruction()
        let bytes = (base + offset).assumingMemoryBound(to: UInt8.self)
        if let reason = decode(bytes, available: code.count - offset, into: &insn) { return .invalid(reason) }
        return .instruction(insn)
    }

    /// The engines' entry point: decodes the instruction at `code`, of which `available` bytes
    /// (at least 1) may be read, into `insn` (which must be fresh); nil when it is an instruction.
    public func decode(_ code: UnsafePointer<UInt8>, available: Int, into insn: inout Instruction) -> InvalidReason? {
        // An instruction is at most 15 bytes: a window of that size bounds every read below.
        guard available > 0 else { return .truncated }
        let window = Window(end: available < 15 ? available : 15, truncated: available < 15 ? .truncated : .tooLong)
        var i = 0
        var prefixes: UInt16 = 0
        var rex: UInt8 = 0
        var lastRepeat: UInt8 = 0

        // Legacy prefixes and REX. A REX followed by anything but the opcode is ignored.
        // Most instructions have at most one REX and no other prefix: that case takes no branch
        // on whether the REX is there (which varies from one instruction to the next).
        let prefixBits = tables.prefixBits
        let first = code[0]
        let firstIsREX = first & 0xF0 == 0x40
        i = firstIsREX ? 1 : 0
        guard i < window.end else { return window.truncated }
        var byte = code[i]
        if prefixBits[Int(byte)] == 0 {
            rex = firstIsREX ? first : 0
            prefixes = firstIsREX ? Prefixes.rex.rawValue : 0
        } else {
            i = 0
            while true {
                guard i < window.end else { return window.truncated }
                byte = code[i]
                let bit = prefixBits[Int(byte)]
                if bit == 0 { break }
                if bit == Prefixes.rex.rawValue {
                    if rex != 0 { prefixes |= Prefixes.ignoredREX.rawValue }
                    rex = byte
                } else {
                    if byte & 0xFE == 0xF2 { lastRepeat = byte }
                    if rex != 0 { prefixes |= Prefixes.ignoredREX.rawValue; rex = 0 }
                }
                prefixes |= bit
                i &+= 1
            }
        }
        if lastRepeat == 0xF3 { prefixes |= Prefixes.lastIsF3.rawValue }
        insn.opcodeOffset = UInt8(truncatingIfNeeded: i)
        let context = PrefixContext(prefixes: prefixes, rex: rex, lastRepeat: lastRepeat)

        // The common case: a one-byte or 0F opcode with no prefix that selects a form but 66 and REX.
        if prefixes & Self.keyPrefixes == 0 {
            if byte == 0x0F {
                guard i &+ 1 < window.end else { return window.truncated }
                let second = code[i &+ 1]
                if second != 0x38 && second != 0x3A && second != 0x0F {
                    return decodeDirect(code, table: 1, opcodeAt: i &+ 1, window, context, into: &insn)
                }
            } else if byte != 0xC4 && byte != 0xC5 && byte != 0x62 && byte != 0x8F {
                return decodeDirect(code, table: 0, opcodeAt: i, window, context, into: &insn)
            }
        }
        return decodeSearched(code, escapeAt: i, window, context, into: &insn)
    }

    /// 67, F2 and F3: the legacy prefixes beside 66 that take part in selecting a form.
    static let keyPrefixes = Prefixes.addressSize.rawValue | Prefixes.rep.rawValue | Prefixes.repne.rawValue

    /// The bytes an instruction may span, and what running out of them means.
    struct Window {
        let end: Int
        let truncated: InvalidReason
    }

    /// What the legacy prefixes and REX said.
    struct PrefixContext {
        let prefixes: UInt16
        let rex: UInt8
        let lastRepeat: UInt8
    }

    /// A legacy one-byte or 0F opcode without 67, F2 or F3: its form is a table lookup.
    @_transparent
    func decodeDirect(_ code: UnsafePointer<UInt8>, table: Int, opcodeAt start: Int, _ window: Window,
                              _ context: PrefixContext, into insn: inout Instruction) -> InvalidReason? {
        let t = tables
        var i = start
        let opcode = code[i]  // the caller has checked that it is inside the window
        i &+= 1
        insn.opcode = opcode
        let slot = table &* 256 &+ Int(opcode)
        let has66 = context.prefixes & Prefixes.operandSize.rawValue != 0
        let byPrefix = t.directByPrefix[slot &* 4 &+ Int((context.rex >> 3) & 1) &+ (has66 ? 2 : 0)]
        let run = t.directRuns[slot]
        if run.hasModRM {
            if let reason = readModRM(code, &i, window, modIgnored: run.modIgnored, into: &insn) { return reason }
        } else if !run.defined {
            return .undefined
        }
        if !run.defined { return i <= window.end ? .undefined : window.truncated }
        var direct = byPrefix
        if direct == DecoderTables.useRun {
            let index = DecoderTables.directIndex(modrm: insn.modrm, takesModRM: run.hasModRM, rex: context.rex, has66: has66)
            direct = t.directForms[Int(run.start) &+ (index & Int(run.mask))]
        }
        if direct & 0xFFFF == DecoderTables.noForm { return .undefined }
        return finish(code, form: Int(direct & 0xFFFF), immediate: Int(direct >> 16), table: table, at: i, window, context,
                      takesModRM: run.hasModRM, into: &insn)
    }

    /// Everything else: the escapes, VEX/EVEX/XOP, and the prefixes that select forms, through
    /// the pattern search.
    private func decodeSearched(_ code: UnsafePointer<UInt8>, escapeAt start: Int, _ window: Window, _ context: PrefixContext,
                                into insn: inout Instruction) -> InvalidReason? {
        let t = tables
        let end = window.end, truncated = window.truncated
        var i = start
        let byte = code[i]
        let prefixes = context.prefixes, rex = context.rex

        // Opcode escapes and VEX/EVEX/XOP prefixes select the table.
        var table = 0
        var isEVEX = false, isVector = false
        switch byte {
        case 0x0F:
            i &+= 1
            guard i < end else { return truncated }
            switch code[i] {
            case 0x38: table = 2; i &+= 1
            case 0x3A: table = 3; i &+= 1
            case 0x0F: table = 4; i &+= 1
            default: table = 1
            }
        case 0xC5:
            guard i &+ 1 < end else { return truncated }
            let p = code[i &+ 1]
            insn.vector.r = (~p >> 7) & 1
            insn.vector.vvvv = (~p >> 3) & 0xF
            insn.vector.l = (p >> 2) & 1
            insn.vector.pp = p & 3
            insn.vector.map = 1
            table = 5
            isVector = true
            i &+= 2
        case 0xC4, 0x8F:
            guard i &+ 1 < end else { return truncated }
            let p0 = code[i &+ 1]
            let map = p0 & 0x1F
            if byte == 0x8F && map < 8 { break }  // POP r/m64, not XOP
            guard i &+ 2 < end else { return truncated }
            let p1 = code[i &+ 2]
            insn.vector.r = (~p0 >> 7) & 1
            insn.vector.x = (~p0 >> 6) & 1
            insn.vector.b = (~p0 >> 5) & 1
            insn.vector.w = p1 >> 7
            insn.vector.vvvv = (~p1 >> 3) & 0xF
            insn.vector.l = (p1 >> 2) & 1
            insn.vector.pp = p1 & 3
            insn.vector.map = map
            if byte == 0xC4 {
                guard (1...3).contains(map) else { return .undefined }
                table = 4 &+ Int(map)
            } else {
                guard (8...10).contains(map) else { return .undefined }
                table = 5 &+ Int(map)
            }
            isVector = true
            i &+= 3
        case 0x62:
            guard i &+ 3 < end else { return truncated }
            let p0 = code[i &+ 1], p1 = code[i &+ 2], p2 = code[i &+ 3]
            // P0 bit 3 is reserved (0); P1 bit 2 is fixed (1: EVEX, 0: Knights Corner's MVEX).
            guard p0 & 0x08 == 0, p1 & 0x04 != 0 else { return .reservedBits }
            insn.vector.r = ((~p0 >> 7) & 1) | (((~p0 >> 4) & 1) << 1)
            insn.vector.x = (~p0 >> 6) & 1
            insn.vector.b = (~p0 >> 5) & 1
            insn.vector.map = p0 & 7
            insn.vector.w = p1 >> 7
            insn.vector.vvvv = ((~p1 >> 3) & 0xF) | (((~p2 >> 3) & 1) << 4)
            insn.vector.pp = p1 & 3
            insn.vector.z = p2 & 0x80 != 0
            insn.vector.l = (p2 >> 5) & 3
            insn.vector.broadcast = p2 & 0x10 != 0
            insn.vector.aaa = p2 & 7
            switch insn.vector.map {
            case 1, 2, 3: table = 7 &+ Int(insn.vector.map)
            case 5, 6: table = 6 &+ Int(insn.vector.map)
            default: return .undefined
            }
            isVector = true
            isEVEX = true
            i &+= 4
        default:
            break
        }
        // A VEX/EVEX/XOP prefix replaces 66/F2/F3 and REX; LOCK is never allowed with it.
        let legacySelector = Prefixes.operandSize.rawValue | Prefixes.rep.rawValue | Prefixes.repne.rawValue | Prefixes.lock.rawValue
        if isVector && (prefixes & legacySelector != 0 || rex != 0) { return .prefixBeforeVEX }
        var opcodeByte: UInt8 = 0
        if table != 4 {
            guard i < end else { return truncated }
            opcodeByte = code[i]
            i &+= 1
        }
        insn.opcode = opcodeByte

        // ModRM, SIB and displacement: their layout depends on the opcode alone.
        var entry = t.entries[table &* 256 &+ Int(opcodeByte)]
        let takesModRM = table == 4 ? true : entry.hasModRM
        if !takesModRM && entry.count == 0 { return .undefined }
        if takesModRM, let reason = readModRM(code, &i, window, modIgnored: entry.modIgnored, into: &insn) { return reason }
        let modrm = insn.modrm
        if table == 4 {
            // 3DNow!: the opcode is the byte after ModRM, SIB and displacement.
            guard i < end else { return truncated }
            insn.opcode = code[i]
            entry = t.entries[4 &* 256 &+ Int(code[i])]
            i &+= 1
        }
        guard i <= end else { return truncated }
        if entry.count == 0 { return .undefined }

        // The instance's fields, one bit each, to match against the patterns.
        let rexW = rex & 8 != 0
        let has66 = prefixes & Prefixes.operandSize.rawValue != 0
        var key: UInt64
        if isVector {
            key = DecoderTables.legacyKey(modrm: modrm, takesModRM: takesModRM, selector: UInt64(insn.vector.pp),  // 0 none, 1 66, 2 F3, 3 F2
                                          address32: prefixes & Prefixes.addressSize.rawValue != 0, rex: insn.vector.w << 3)
            key &= ~(0xF << DecoderTables.lShift)
            var length = insn.vector.l
            // EVEX.b on a register operand turns L'L into rounding control: the length is 512.
            if isEVEX && insn.vector.broadcast && modrm >> 6 == 3 { length = 2 }
            key |= 1 << (DecoderTables.lShift &+ UInt64(length))
        } else {
            let lastRepeat = context.lastRepeat
            let selector: UInt64 = lastRepeat != 0 ? (lastRepeat == 0xF3 ? 2 : 3) : has66 ? 1 : 0
            key = DecoderTables.legacyKey(modrm: modrm, takesModRM: takesModRM, selector: selector,
                                          address32: prefixes & Prefixes.addressSize.rawValue != 0, rex: rex)
        }
        // The operand-size field is folded into each pattern's mask per prefix context.
        let form = t.search(entry, key: key, context: rexW ? 2 : has66 ? 1 : 0)
        if form < 0 { return .undefined }
        let facts = t.facts[form]
        var immediate = Int(facts.immediateBytes)
        if facts.hasMoffs { immediate &+= prefixes & Prefixes.addressSize.rawValue != 0 ? 4 : 8 }
        return finish(code, form: form, immediate: immediate, table: table, at: i, window, context, takesModRM: takesModRM,
                      isVector: isVector, isEVEX: isEVEX, into: &insn)
    }

    /// ModRM, SIB and displacement, at `i` (moved past them).
    @_transparent
    func readModRM(_ code: UnsafePointer<UInt8>, _ i: inout Int, _ window: Window, modIgnored: Bool,
                   into insn: inout Instruction) -> InvalidReason? {
        guard i < window.end else { return window.truncated }
        var modrm = code[i]
        insn.modrmOffset = UInt8(truncatingIfNeeded: i)
        i &+= 1
        let mod = modrm >> 6, rm = modrm & 7
        if modIgnored {
            modrm |= 0xC0  // MOV CR/DR: a register operand whatever mod says
        } else if mod != 3 {
            var sibBase: UInt8 = 0
            if rm == 4 {
                guard i < window.end else { return window.truncated }
                insn.sib = code[i]
                sibBase = insn.sib & 7
                insn.sibOffset = UInt8(truncatingIfNeeded: i)
                i &+= 1
            }
            // mod 1: disp8; mod 2: disp32; mod 0: disp32 only for RIP (rm 5) or a SIB base of 5.
            // Without branches: which case it is depends on the data, so a branch would mispredict.
            var displacement = (0x410 &>> (Int(mod) &<< 2)) & 0xF
            if mod == 0 && (rm == 5 || (rm == 4 && sibBase == 5)) { displacement = 4 }
            insn.displacementOffset = displacement != 0 ? UInt8(truncatingIfNeeded: i) : 0
            insn.displacementSize = UInt8(truncatingIfNeeded: displacement)
            i &+= displacement
        }
        insn.modrm = modrm
        return nil
    }

    /// Once the form and its immediate bytes are known: the immediates, what the CPU would refuse
    /// (#UD) beyond the pattern, and what Sieve refuses although a CPU executes it.
    @_transparent
    func finish(_ code: UnsafePointer<UInt8>, form: Int, immediate: Int, table: Int, at start: Int, _ window: Window,
                _ context: PrefixContext, takesModRM: Bool, isVector: Bool = false, isEVEX: Bool = false,
                into insn: inout Instruction) -> InvalidReason? {
        guard start <= window.end else { return window.truncated }
        let facts = tables.facts.baseAddress.unsafelyUnwrapped + form
        let prefixes = context.prefixes, rex = context.rex, modrm = insn.modrm
        var i = start
        insn.immediateOffset = immediate != 0 ? UInt8(truncatingIfNeeded: i) : 0
        insn.immediateSize = UInt8(truncatingIfNeeded: immediate)
        i &+= immediate
        if table == 4 {
            // The 3DNow! opcode byte sits where an immediate would.
            insn.immediateOffset = UInt8(truncatingIfNeeded: i &- 1)
            insn.immediateSize = 1
        }
        guard i <= window.end else { return window.truncated }

        let classes = facts.pointee.classes
        if prefixes & Prefixes.lock.rawValue != 0 && !(classes.contains(.lockable) && modrm >> 6 != 3 && takesModRM) {
            return .lockNotAllowed
        }
        let has66 = prefixes & Prefixes.operandSize.rawValue != 0
        if has66 && classes.contains(.no66) { return .undefined }
        if context.lastRepeat != 0 && classes.contains(.noF2F3) { return .undefined }
        if isVector {
            if !facts.pointee.usesVVVV && insn.vector.vvvv & 0xF != 0 { return .unusedVVVV }
            if isEVEX {
                // EVEX.V' is vvvv's fifth bit, or VSIB's index high bit; otherwise it must be 1 (0 decoded).
                if !facts.pointee.usesVVVV && !facts.pointee.vsib && insn.vector.vvvv != 0 { return .unusedVVVV }
                if let reason = Self.evexMaskingProblem(insn.vector, classes, memory: modrm >> 6 != 3) { return reason }
            }
        } else {
            // REX's bits (all 0 without one: no branch on whether it is there).
            insn.vector.r = (rex >> 2) & 1
            insn.vector.x = (rex >> 1) & 1
            insn.vector.b = rex & 1
            insn.vector.w = (rex >> 3) & 1
        }

        insn.length8 = UInt8(truncatingIfNeeded: i)
        insn.form16 = UInt16(truncatingIfNeeded: form)
        insn.rex = rex
        insn.prefixes = Prefixes(rawValue: prefixes)
        if facts.pointee.checksRegisters, let reason = registerProblem(insn) { return reason }
        if isVector {
            insn.refusal = Self.ignoredVectorBits(insn, facts.pointee.vectorBits, isEVEX: isEVEX, code: code)
        } else if prefixes & Prefixes.ignoredREX.rawValue != 0 || facts.pointee.mayBeRefused {
            insn.refusal = Self.refusal(insn, classes, table: table)
        }
        if redundancy == .all && insn.opcodeOffset != 0 {
            insn.redundantPrefixes = redundantPrefixes(insn, facts.pointee.prefixUse, code)
        }
        return nil
    }

    /// Register numbers that do not exist (CR9, DR8) or must differ and do not (gathers, AMX).
    private func registerProblem(_ insn: Instruction) -> InvalidReason? {
        let form = database.forms[insn.formIndex]
        let reg = (insn.modrm >> 3) & 7, extendedR = insn.vector.r & 1 != 0
        for operand in form.operands {
            switch (operand.kind.registerClass, operand.kind.location) {
            case (.control, .modrmReg) where extendedR && reg != 0: return .undefined   // only CR8 beyond CR7
            case (.debug, .modrmReg) where extendedR: return .undefined
            // There are eight opmask registers: no extension bit may name a ninth.
            case (.opmask, .modrmReg) where insn.vector.r != 0: return .undefined
            case (.opmask, .vvvv) where insn.vector.vvvv > 7: return .undefined
            // Eight tile registers likewise.
            case (.tile, .modrmReg) where insn.vector.r != 0: return .undefined
            case (.tile, .vvvv) where insn.vector.vvvv > 7: return .undefined
            case (.tile, .modrmRegister) where insn.vector.b != 0: return .undefined
            // EVEX.R' would name a sixteenth-plus general register.
            case (.gpr32, .modrmReg), (.gpr64, .modrmReg):
                if form.encoding == .evex && insn.vector.r & 2 != 0 { return .undefined }
            default: break
            }
        }
        let distinctAll = form.classes.contains(.distinctRegisters)
        guard distinctAll || form.classes.contains(.distinctDestination) else { return nil }
        var numbers: [UInt8] = []
        for operand in form.operands where operand.kind.registerClass != .opmask {
            switch operand.kind.location {
            case .modrmReg: numbers.append(reg | insn.vector.r << 3)
            case .modrmRegister, .modrmRegisterOrMemory:
                if insn.hasMemoryModRM { continue }
                numbers.append(insn.modrm & 7 | insn.vector.b << 3 | insn.vector.x << 4)
            case .vvvv: numbers.append(insn.vector.vvvv)
            case .vsib:
                // EVEX.V' is the index's fifth bit.
                numbers.append((insn.sib >> 3) & 7 | insn.vector.x << 3 | (insn.vector.vvvv & 0x10))
            default: continue
            }
        }
        let sources = distinctAll ? numbers.indices : numbers.indices.prefix(1)
        for k in sources where numbers[(k + 1)...].contains(numbers[k]) { return .sameRegisters }
        return nil
    }

    private static func evexMaskingProblem(_ v: VectorFields, _ classes: FormClasses, memory: Bool) -> InvalidReason? {
        if v.aaa != 0 && !classes.contains(.opmask) { return .badEVEXMasking }
        if v.aaa == 0 && classes.contains(.opmaskRequired) { return .badEVEXMasking }
        // Zeroing needs a mask: {z} with k0 is reserved.
        if v.z && (!classes.contains(.zeroing) || v.aaa == 0) { return .badEVEXMasking }
        if v.broadcast {
            if memory && !classes.contains(.broadcast) { return .badEVEXMasking }
            if !memory && !classes.contains(.roundingControl) && !classes.contains(.suppressExceptions) {
                return .badEVEXMasking
            }
        }
        return nil
    }

    /// Canonical encodings only (DESIGN §8): a VEX/EVEX/XOP bit the CPU ignores must be clear
    /// (R, X, B inverted: not extending), as NaCl requires. Ignored bits are where errata live
    /// (Reptar is a prefix the CPU should have ignored). The vvvv bits are not here: set on a form
    /// without a vvvv operand, the CPU raises #UD (`InvalidReason.unusedVVVV`).
    private static func ignoredVectorBits(_ insn: Instruction, _ use: DecoderTables.VectorBitUse, isEVEX: Bool,
                                          code: UnsafePointer<UInt8>) -> Refusal? {
        let v = insn.vector
        let memory = insn.hasMemoryModRM
        if v.w != 0 && use.contains(.wIgnored) { return .ignoredVectorW }
        // EVEX.b on a register operand makes L'L the rounding control (or an ignored one, with SAE): not a length.
        if v.l != 0 && use.contains(.lIgnored) && !(isEVEX && v.broadcast && !memory) { return .ignoredVectorL }
        if v.r != 0 && !use.contains(.regExtended) { return .unusedVectorR }
        // X extends a SIB index (any SIB: index 100 with X is r12), or in EVEX a vector ModRM.rm register's fifth bit.
        let xUsed = memory ? insn.sibOffset != 0 : isEVEX && use.contains(.rmVector)
        if v.x != 0 && !xUsed { return .unusedVectorX }
        // B extends a base register (none for RIP-relative or a SIB without base) or a ModRM.rm register.
        let mod = insn.modrm >> 6, rm = insn.modrm & 7
        let hasBase = !(mod == 0 && rm == 5) && !(insn.sibOffset != 0 && mod == 0 && insn.sib & 7 == 5)
        if v.b != 0 && !(memory ? hasBase : use.contains(.rmExtended) && insn.hasModRM) { return .unusedVectorB }
        if use.contains(.is4Low) && code[Int(insn.immediateOffset)] & 0xF != 0 { return .ignoredIs4Bits }
        return nil
    }

    /// Encodings a CPU executes but whose length or meaning depends on the vendor, or that
    /// carry a prefix the CPU silently drops: Sieve refuses them (DESIGN §6).
    private static func refusal(_ insn: Instruction, _ classes: FormClasses, table: Int) -> Refusal? {
        if insn.prefixes.contains(.ignoredREX) { return .rexNotLast }
        if classes.contains(.intelForce64) && insn.prefixes.contains(.operandSize) && !insn.rexW {
            return .operandSizeOnNearBranch
        }
        if insn.rexW && table == 0 && insn.opcode == 0xFF && insn.hasModRM {
            let reg = (insn.modrm >> 3) & 7
            if reg == 3 || reg == 5 { return .rexWFarTransfer }
        }
        if insn.rexW && table == 1 && (insn.opcode == 0xB2 || insn.opcode == 0xB4 || insn.opcode == 0xB5) {
            return .rexWSegmentLoad
        }
        return nil
    }
}
