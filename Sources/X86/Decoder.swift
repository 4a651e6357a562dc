/// The strict x86-64 decoder: prefixes, opcode maps, ModRM/SIB, displacement and immediate,
/// then the form, from tables derived from the ISA database.
///
/// Two layers: bytes a CPU does not execute are `.invalid`; an instruction a CPU executes but
/// Sieve will not accept (vendor-dependent length or meaning, an ignored REX) decodes with a
/// `refusal`. It reads only inside the buffer it is given, whatever the bytes.
public struct Decoder: Sendable {
    public let database: ISADatabase
    let tables: DecoderTables

    /// Whether decoded instructions carry `redundantPrefixes` (a little work per prefixed
    /// instruction; a verifier whose policy never asks can skip it).
    public let findsRedundantPrefixes: Bool

    public init(database: ISADatabase = .shared, findsRedundantPrefixes: Bool = true) {
        self.database = database
        self.tables = database === ISADatabase.shared && Self.sharedTables != nil ? Self.sharedTables! : DecoderTables(database: database)
        self.findsRedundantPrefixes = findsRedundantPrefixes
    }

    /// One copy of the compiled-in database's tables for every decoder.
    private static let sharedTables: DecoderTables? = DecoderTables(database: .shared)

    /// The same decoder without the redundant-prefix analysis.
    public static let withoutRedundancy = Decoder(findsRedundantPrefixes: false)

    /// The decoder over the compiled-in database.
    public static let shared = Decoder()

    public func form(of instruction: Instruction) -> Form { database.forms[instruction.formIndex] }

    public func decode(_ bytes: [UInt8], at offset: Int = 0) -> Decoded {
        bytes.withUnsafeBytes { decode($0, at: offset) }
    }

    /// Decodes the instruction starting at `offset`; reads no byte outside `code`.
    public func decode(_ code: UnsafeRawBufferPointer, at offset: Int) -> Decoded {
        guard offset >= 0, offset < code.count else { return .invalid(.truncated) }
        // An instruction is at most 15 bytes: a window of that size bounds every read below.
        let end = min(code.count, offset + 15)
        let truncated: InvalidReason = code.count - offset < 15 ? .truncated : .tooLong
        var i = offset
        var insn = Instruction()
        var prefixes = Prefixes()
        var rex: UInt8 = 0
        var lastRepeat: UInt8 = 0

        // Legacy prefixes and REX. A REX followed by anything but the opcode is ignored.
        var byte: UInt8 = 0
        prefixLoop: while true {
            guard i < end else { return .invalid(truncated) }
            byte = code[i]
            switch byte {
            case 0xF0: prefixes.insert(.lock)
            case 0xF2: prefixes.insert(.repne); lastRepeat = byte
            case 0xF3: prefixes.insert(.rep); lastRepeat = byte
            case 0x66: prefixes.insert(.operandSize)
            case 0x67: prefixes.insert(.addressSize)
            case 0x26: prefixes.insert(.segmentES)
            case 0x2E: prefixes.insert(.segmentCS)
            case 0x36: prefixes.insert(.segmentSS)
            case 0x3E: prefixes.insert(.segmentDS)
            case 0x64: prefixes.insert(.segmentFS)
            case 0x65: prefixes.insert(.segmentGS)
            case 0x40...0x4F:
                prefixes.insert(.rex)
                if rex != 0 { prefixes.insert(.ignoredREX) }
                rex = byte
                i += 1
                continue prefixLoop
            default: break prefixLoop
            }
            if rex != 0 { prefixes.insert(.ignoredREX); rex = 0 }
            i += 1
        }
        if lastRepeat == 0xF3 { prefixes.insert(.lastIsF3) }
        insn.opcodeOffset = UInt8(i - offset)

        // Opcode escapes and VEX/EVEX/XOP prefixes select the table.
        var table = 0
        var vector = VectorFields()
        var isEVEX = false, isVector = false
        let legacySelector: Prefixes = [.operandSize, .rep, .repne, .lock]
        switch byte {
        case 0x0F:
            i += 1
            guard i < end else { return .invalid(truncated) }
            switch code[i] {
            case 0x38: table = 2; i += 1
            case 0x3A: table = 3; i += 1
            case 0x0F: table = 4; i += 1
            default: table = 1
            }
        case 0xC5:
            guard i + 1 < end else { return .invalid(truncated) }
            let p = code[i + 1]
            vector.r = (~p >> 7) & 1
            vector.vvvv = (~p >> 3) & 0xF
            vector.l = (p >> 2) & 1
            vector.pp = p & 3
            vector.map = 1
            table = 5
            isVector = true
            i += 2
        case 0xC4, 0x8F:
            guard i + 1 < end else { return .invalid(truncated) }
            let p0 = code[i + 1]
            let map = p0 & 0x1F
            if byte == 0x8F && map < 8 { break }  // POP r/m64, not XOP
            guard i + 2 < end else { return .invalid(truncated) }
            let p1 = code[i + 2]
            vector.r = (~p0 >> 7) & 1
            vector.x = (~p0 >> 6) & 1
            vector.b = (~p0 >> 5) & 1
            vector.w = p1 >> 7
            vector.vvvv = (~p1 >> 3) & 0xF
            vector.l = (p1 >> 2) & 1
            vector.pp = p1 & 3
            vector.map = map
            if byte == 0xC4 {
                guard (1...3).contains(map) else { return .invalid(.undefined) }
                table = 4 + Int(map)
            } else {
                guard (8...10).contains(map) else { return .invalid(.undefined) }
                table = 5 + Int(map)
            }
            isVector = true
            i += 3
        case 0x62:
            guard i + 3 < end else { return .invalid(truncated) }
            let p0 = code[i + 1], p1 = code[i + 2], p2 = code[i + 3]
            // P0 bit 3 is reserved (0); P1 bit 2 is fixed (1: EVEX, 0: Knights Corner's MVEX).
            guard p0 & 0x08 == 0, p1 & 0x04 != 0 else { return .invalid(.reservedBits) }
            vector.r = ((~p0 >> 7) & 1) | (((~p0 >> 4) & 1) << 1)
            vector.x = (~p0 >> 6) & 1
            vector.b = (~p0 >> 5) & 1
            vector.map = p0 & 7
            vector.w = p1 >> 7
            vector.vvvv = ((~p1 >> 3) & 0xF) | (((~p2 >> 3) & 1) << 4)
            vector.pp = p1 & 3
            vector.z = p2 & 0x80 != 0
            vector.l = (p2 >> 5) & 3
            vector.broadcast = p2 & 0x10 != 0
            vector.aaa = p2 & 7
            switch vector.map {
            case 1, 2, 3: table = 7 + Int(vector.map)
            case 5, 6: table = 6 + Int(vector.map)
            default: return .invalid(.undefined)
            }
            isVector = true
            isEVEX = true
            i += 4
        default:
            break
        }
        if isVector {
            // A VEX/EVEX/XOP prefix replaces 66/F2/F3 and REX; LOCK is never allowed with it.
            if !prefixes.isDisjoint(with: legacySelector) || rex != 0 {
                return .invalid(.prefixBeforeVEX)
            }
        }
        var opcodeByte: UInt8 = 0
        if table != 4 {
            guard i < end else { return .invalid(truncated) }
            opcodeByte = code[i]
            i += 1
        }
        insn.opcode = opcodeByte

        // ModRM, SIB and displacement: their layout depends on the opcode alone.
        var entry = tables.entries[table * 256 + Int(opcodeByte)]
        let takesModRM = table == 4 ? true : entry.hasModRM
        if !takesModRM && entry.count == 0 { return .invalid(.undefined) }
        var modrm: UInt8 = 0
        if takesModRM {
            guard i < end else { return .invalid(truncated) }
            modrm = code[i]
            insn.modrmOffset = UInt8(i - offset)
            insn.modrm = modrm
            i += 1
            let mod = modrm >> 6, rm = modrm & 7
            if entry.modIgnored {
                modrm |= 0xC0  // MOV CR/DR: a register operand whatever mod says
                insn.modrm = modrm
            } else if mod != 3 {
                if rm == 4 {
                    guard i < end else { return .invalid(truncated) }
                    insn.sib = code[i]
                    insn.sibOffset = UInt8(i - offset)
                    i += 1
                }
                var displacement = 0
                if mod == 1 {
                    displacement = 1
                } else if mod == 2 || (mod == 0 && rm == 5) || (mod == 0 && rm == 4 && insn.sib & 7 == 5) {
                    displacement = 4
                }
                if displacement != 0 {
                    insn.displacementOffset = UInt8(i - offset)
                    insn.displacementSize = UInt8(displacement)
                    i += displacement
                }
            }
        }
        if table == 4 {
            // 3DNow!: the opcode is the byte after ModRM, SIB and displacement.
            guard i < end else { return .invalid(truncated) }
            insn.opcode = code[i]
            entry = tables.entries[4 * 256 + Int(code[i])]
            i += 1
        }
        guard i <= end else { return .invalid(truncated) }
        if entry.count == 0 { return .invalid(.undefined) }

        // The instance's fields, one bit each, to match against the patterns.
        let rexW = rex & 8 != 0
        var key: UInt64 = 0
        if takesModRM {
            let mod = modrm >> 6
            key |= (mod == 3 ? 1 : 2) << DecoderTables.modShift
            key |= 1 << (DecoderTables.regShift + UInt64((modrm >> 3) & 7))
            key |= 1 << (DecoderTables.rmShift + UInt64(modrm & 7))
        } else {
            key |= 1 << DecoderTables.modShift | 1 << DecoderTables.regShift | 1 << DecoderTables.rmShift
        }
        var selector: UInt64 = 0  // none
        if isVector {
            selector = UInt64(vector.pp)  // 0 none, 1 66, 2 F3, 3 F2
        } else if lastRepeat != 0 {
            selector = lastRepeat == 0xF3 ? 2 : 3
        } else if prefixes.contains(.operandSize) {
            selector = 1
        }
        key |= 1 << (DecoderTables.prefixShift + selector)
        key |= 1 << (DecoderTables.addressShift + (prefixes.contains(.addressSize) ? 0 : 1))
        let w = isVector ? vector.w : (rexW ? 1 : 0)
        key |= 1 << (DecoderTables.wShift + UInt64(w))
        var length = isVector ? vector.l : 0
        // EVEX.b on a register operand turns L'L into rounding control: the length is 512.
        if isEVEX && vector.broadcast && modrm >> 6 == 3 { length = 2 }
        key |= 1 << (DecoderTables.lShift + UInt64(length))
        key |= 1 << (DecoderTables.rexBShift + UInt64(rex & 1))
        let has66 = prefixes.contains(.operandSize)
        let sizeKeys: (UInt64, UInt64, UInt64, UInt64) = (
            1 << (DecoderTables.sizeShift + (rexW ? 2 : has66 ? 0 : 1)),
            1 << (DecoderTables.sizeShift + (rexW ? 2 : has66 ? 0 : 2)),
            1 << (DecoderTables.sizeShift + 2),
            1 << (DecoderTables.sizeShift + (rexW ? 2 : 1)))

        var matched: DecoderTables.Pattern?
        let patterns = tables.patterns
        for p in Int(entry.start)..<Int(entry.start) + Int(entry.count) {
            let pattern = patterns[p]
            let size: UInt64
            switch pattern.sizeRule {
            case .normal: size = sizeKeys.0
            case .default64: size = sizeKeys.1
            case .always64: size = sizeKeys.2
            case .mandatory66: size = sizeKeys.3
            }
            if (key | size) & ~pattern.allowed == 0 { matched = pattern; break }
        }
        guard let pattern = matched else { return .invalid(.undefined) }
        let facts = tables.facts[Int(pattern.form)]

        // Immediates, now that the form is known.
        var immediate = Int(facts.immediateBytes)
        if facts.hasMoffs { immediate += prefixes.contains(.addressSize) ? 4 : 8 }
        if immediate != 0 {
            insn.immediateOffset = UInt8(i - offset)
            insn.immediateSize = UInt8(immediate)
            i += immediate
        }
        if table == 4 {
            // The 3DNow! opcode byte sits where an immediate would.
            insn.immediateOffset = UInt8(i - 1 - offset)
            insn.immediateSize = 1
        }
        guard i <= end else { return .invalid(truncated) }

        // What the CPU would refuse (#UD) beyond the pattern.
        if prefixes.contains(.lock) && !(facts.classes.contains(.lockable) && modrm >> 6 != 3 && takesModRM) {
            return .invalid(.lockNotAllowed)
        }
        if facts.classes.contains(.no66) && prefixes.contains(.operandSize) { return .invalid(.undefined) }
        if facts.classes.contains(.noF2F3) && lastRepeat != 0 { return .invalid(.undefined) }
        if isVector {
            if !facts.usesVVVV && vector.vvvv & 0xF != 0 { return .invalid(.unusedVVVV) }
            if isEVEX {
                // EVEX.V' is vvvv's fifth bit, or VSIB's index high bit; otherwise it must be 1 (0 decoded).
                if !facts.usesVVVV && !facts.vsib && vector.vvvv != 0 { return .invalid(.unusedVVVV) }
                if let reason = Self.evexMaskingProblem(vector, facts.classes, memory: modrm >> 6 != 3) {
                    return .invalid(reason)
                }
            }
        }

        insn.length8 = UInt8(i - offset)
        insn.form16 = pattern.form
        insn.rex = rex
        insn.prefixes = prefixes
        if !isVector && rex != 0 {
            vector.r = (rex >> 2) & 1
            vector.x = (rex >> 1) & 1
            vector.b = rex & 1
            vector.w = (rex >> 3) & 1
        }
        insn.vector = vector
        if facts.checksRegisters, let reason = registerProblem(insn) { return .invalid(reason) }
        insn.refusal = Self.refusal(insn, facts.classes, table: table)
        if findsRedundantPrefixes && insn.opcodeOffset != 0 {
            insn.redundantPrefixes = redundantPrefixes(insn, facts.prefixUse, code, at: offset)
        }
        return .instruction(insn)
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
