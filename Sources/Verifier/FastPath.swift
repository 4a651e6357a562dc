import X86

/// The Swift engine's shortcut for the common instruction: at most a 66 (or NaCl's padding NOP
/// prefixes) and a REX, a one-byte or 0F opcode, a form the policy accepts outright. It decodes
/// and checks in one go from the same pattern lists as the C core's `fast_step`, and gives up
/// (returns 0) before any side effect wherever the full decode and check could report
/// something or decide differently; the full path then runs as before.
final class FastTables: @unchecked Sendable {  // immutable after init
    struct Entry { var starts: (Int32, Int32, Int32); var hasModRM: Bool; var modIgnored: Bool }
    struct Pattern { var form: UInt16; var immediate: UInt8; var quick: UInt8; var writes: (UInt8, UInt8, UInt8) }

    /// One-byte then 0F map, 512 entries.
    let entries: UnsafeMutableBufferPointer<Entry>
    let allowed: UnsafeMutableBufferPointer<UInt64>
    let patterns: UnsafeMutableBufferPointer<Pattern>
    /// Per ModRM byte: key bits, bytes after it, memory, SIB-base-5 (`PatternLists.modrmEntry`).
    let modrm: UnsafeMutableBufferPointer<UInt32>

    init(_ compiled: CompiledPolicy, decoder: Decoder) {
        let tables = decoder.tableExport
        let lists = PatternLists(tables, quick: tables.forms.indices.map { compiled.quickFlags($0, tables.forms[$0]) })
        entries = .allocate(capacity: 512)
        for k in 0..<512 {
            let s = lists.starts[k]
            entries[k] = Entry(starts: (Int32(s[0]), Int32(s[1]), Int32(s[2])), hasModRM: tables.entries[k].hasModRM,
                               modIgnored: tables.entries[k].modIgnored)
        }
        allowed = .allocate(capacity: lists.patterns.count)
        patterns = .allocate(capacity: lists.patterns.count)
        for (k, p) in lists.patterns.enumerated() {
            allowed[k] = p.allowed
            let real = p.form != PatternLists.noForm
            let w = real ? compiled.plans[Int(p.form)].writes : (0, 0, 0)
            patterns[k] = Pattern(form: p.form, immediate: real ? tables.forms[Int(p.form)].immediateBytes : 0, quick: p.quick, writes: w)
        }
        modrm = .allocate(capacity: 256)
        for m in 0..<256 { modrm[m] = PatternLists.modrmEntry(UInt8(m)) }
    }

    deinit {
        entries.deallocate()
        allowed.deallocate()
        patterns.deallocate()
        modrm.deallocate()
    }
}

extension NaClPass {
    /// The fast path at `offset` with `room` bytes left in the bundle: the instruction's length
    /// when it is done (counted, checked, its restriction in `restricted`), 0 when the full
    /// path must take it. The caller guarantees 16 readable bytes from `offset`.
    mutating func fastStep(_ t: FastTables, at offset: Int, room: Int) -> Int {
        let c = bytes + offset
        var i = 0, rex: UInt8 = 0, b = Int(c[0])
        let o16 = b == 0x66
        var need = QuickFlags.decode | QuickFlags.accept
        if o16 {
            need |= QuickFlags.operandSize
            if c[1] == 0x66 || c[1] == 0x2E {
                // NaCl's padding NOP 66{1,6} 2E 0F 1F 84 00 00 00 00 00: its prefixes are exempt.
                while i < 5 && c[i + 1] == 0x66 { i += 1 }
                guard Self.isNaClNOP(c, i + 1 + 9) else { return 0 }
                i += 1
                need ^= QuickFlags.operandSize | QuickFlags.nop66
            }
            i += 1
            b = Int(c[i])
        }
        if b & 0xF0 == 0x40 { rex = UInt8(b); i += 1; b = Int(c[i]) }
        if b == 0x0F { i += 1; b = 256 + Int(c[i]) }  // the entry, in the one-byte or the 0F map
        let entry = t.entries[b]
        var m = t.modrm[0xC0], modrm: UInt8 = 0, sib: UInt8 = 0, memory = false, n = 1
        if entry.hasModRM {
            modrm = c[i + 1] | (entry.modIgnored ? 0xC0 : 0)
            m = t.modrm[Int(modrm)]
            memory = (m >> 28) & 1 != 0
            sib = memory && modrm & 7 == 4 ? c[i + 2] : 0
            n = 2 + Int((m >> 24) & 15) + ((m >> 29) & 1 != 0 && sib & 7 == 5 ? 4 : 0)
        }
        var p = Int(rex & 8 != 0 ? entry.starts.2 : o16 ? entry.starts.1 : entry.starts.0)
        let key = UInt64(m & 0x3FFFF) | 1 << (25 + 1) | 1 << 29 | 1 << (18 + (o16 ? 1 : 0)) | 1 << (33 + UInt64(rex & 1))
        while key & ~t.allowed[p] != 0 { p += 1 }  // each list ends in a pattern that matches anything
        let pattern = t.patterns[p]
        let q = pattern.quick
        let length = i + n + Int(pattern.immediate)
        if q & need != need || length > 15 || length > room || restricted == 4 || restricted == 5 { return 0 }
        if rex & 8 != 0 && (b == 0xFF || b == 256 + 0xB2 || b == 256 + 0xB4 || b == 256 + 0xB5) { return 0 }  // the decoder may refuse
        // NaCl's sanctioned %rsp/%rbp forms all have REX.W; a direct call must end its bundle.
        if rex & 8 != 0 && Self.special(code, offset, length) != .none { return 0 }
        if q & QuickFlags.call != 0 && (base &+ UInt64(offset + length)) % UInt64(bundleSize) != 0 { return 0 }
        var restricts = -1
        for k in 0..<3 {
            let slot = k == 0 ? pattern.writes.0 : k == 1 ? pattern.writes.1 : pattern.writes.2
            if slot == 0 { break }
            let w: Int
            switch slot & 15 {
            case 1: w = Int((modrm >> 3) & 7 | (rex & 4) << 1)
            case 2: if memory { continue }; w = Int(modrm & 7 | (rex & 1) << 3)
            case 3: w = Int(b & 7) | Int(rex & 1) << 3
            case 4: w = 0
            default: continue
            }
            if slot & 0xF0 == 0x10 && w >= 4 && w < 8 && rex == 0 { continue }  // AH..BH
            if q & QuickFlags.zeroExtends != 0 && slot & 0xF0 == 0x30 {
                if w == 15 { return 0 }
                if restricts < 0 { restricts = w }
            } else if w == 15 || w == 4 || w == 5 {
                return 0
            }
        }
        var index = -1
        if memory && q & QuickFlags.noMemory == 0 {
            let mod = modrm >> 6, rm = modrm & 7
            var baseRegister = Int(rm | (rex & 1) << 3)
            if rm == 4 {
                baseRegister = sib & 7 == 5 && mod == 0 ? -1 : Int(sib & 7 | (rex & 1) << 3)
                index = Int((sib >> 3) & 7 | (rex & 2) << 2)
                if index == 4 { index = -1 }
            }
            if !(mod == 0 && rm == 5) && ((1 << (baseRegister & 63)) & 0x8030 == 0 || baseRegister < 0 || index >= 0 && index != restricted) {
                return 0
            }
        }
        validTargets[offset] = index < 0  // a restricted access is one unit with its restriction
        if q & QuickFlags.direct != 0, let d = Self.displacement(c + length - Int(pattern.immediate), size: Int(pattern.immediate)) {
            branches.append((offset, length, offset + length + d))
        }
        report.instructions += 1
        bundle[bundleCount] = (offset, length, Int(pattern.form))
        bundleCount += 1
        restricted = restricts
        return length
    }
}
