/// Encodings of the few x86-64 instructions the witness programs are made of, as bytes. Every
/// memory operand is NaCl's: %r15 as the base, at most one index, a constant displacement.
public enum Register: Int, Sendable, CaseIterable {
    case rax, rcx, rdx, rbx, rsp, rbp, rsi, rdi, r8, r9, r10, r11, r12, r13, r14, r15

    var low: UInt8 { UInt8(rawValue & 7) }
    var high: UInt8 { UInt8(rawValue >> 3) }

    public var name64: String { ["rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi"][safe: rawValue] ?? "r\(rawValue)" }
    public var name32: String {
        ["eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi"][safe: rawValue] ?? "r\(rawValue)d"
    }
    func name(_ width: Width) -> String { width == .q ? "%" + name64 : "%" + name32 }
}

/// Operand width: 32-bit operations zero-extend (NaCl's restriction), 64-bit ones do not.
public enum Width: Sendable { case l, q }

/// An arithmetic or logic operation of the 00-3F / 80-83 families, by its ModRM.reg digit.
public enum ALU: UInt8, Sendable {
    case add = 0, or = 1, and = 4, sub = 5, xor = 6, cmp = 7
    var name: String { ["add", "or", "", "", "and", "sub", "xor", "cmp"][Int(rawValue)] }
}

/// Condition codes, as the low nibble of Jcc.
public enum Condition: UInt8, Sendable {
    case b = 2, ae = 3, e = 4, ne = 5, be = 6, a = 7, s = 8, ns = 9, l = 0xC, ge = 0xD, le = 0xE, g = 0xF
    var name: String { "\(self)" }
}

/// A memory operand `disp(%r15,%index,scale)` or `disp(%r15)`.
public struct Memory: Sendable {
    public var index: Register?
    public var scale: Int = 1
    public var displacement: Int32 = 0

    public init(index: Register? = nil, scale: Int = 1, displacement: Int32 = 0) {
        self.index = index
        self.scale = scale
        self.displacement = displacement
    }

    var text: String {
        let disp = displacement == 0 ? "" : "\(displacement)"
        guard let index else { return "\(disp)(%r15)" }
        return "\(disp)(%r15,%\(index.name64),\(scale))"
    }
}

/// One encoded instruction with its AT&T text for listings.
public struct Encoded: Sendable {
    public let bytes: [UInt8]
    public let text: String
}

enum Encode {
    static func rex(w: Bool, r: UInt8 = 0, x: UInt8 = 0, b: UInt8 = 0, force: Bool = false) -> [UInt8] {
        let value = 0x40 | (w ? 8 : 0) | r << 2 | x << 1 | b
        return value != 0x40 || force ? [value] : []
    }

    static func modrmRegister(_ reg: UInt8, _ rm: Register) -> UInt8 { 0xC0 | (reg & 7) << 3 | rm.low }

    /// ModRM, SIB and displacement of a %r15-based operand, and the REX bits X and B it needs.
    static func memory(_ reg: UInt8, _ m: Memory) -> (bytes: [UInt8], x: UInt8, b: UInt8) {
        let disp = m.displacement
        let mod: UInt8 = disp == 0 ? 0 : (-128...127).contains(disp) ? 1 : 2
        var out: [UInt8]
        var x: UInt8 = 0
        if let index = m.index {
            let scale: UInt8 = [1: 0, 2: 1, 4: 2, 8: 3][m.scale] ?? 0
            out = [mod << 6 | (reg & 7) << 3 | 4, scale << 6 | index.low << 3 | 7]
            x = index.high
        } else {
            out = [mod << 6 | (reg & 7) << 3 | 7]  // rm 7 with REX.B: %r15, no SIB needed
        }
        if mod == 1 { out.append(UInt8(bitPattern: Int8(disp))) }
        if mod == 2 { out += le32(disp) }
        return (out, x, 1)
    }

    static func le32(_ v: Int32) -> [UInt8] { (0..<4).map { UInt8(truncatingIfNeeded: v >> (8 * $0)) } }

    // MARK: - The instructions

    static func mov(_ width: Width, _ dst: Register, _ src: Register) -> Encoded {
        Encoded(bytes: rex(w: width == .q, r: src.high, b: dst.high) + [0x89, modrmRegister(src.low, dst)],
                text: "mov \(src.name(width)),\(dst.name(width))")
    }

    static func load(_ width: Width, _ dst: Register, _ m: Memory) -> Encoded {
        let (tail, x, b) = memory(dst.low, m)
        return Encoded(bytes: rex(w: width == .q, r: dst.high, x: x, b: b) + [0x8B] + tail, text: "mov \(m.text),\(dst.name(width))")
    }

    static func store(_ width: Width, _ m: Memory, _ src: Register) -> Encoded {
        let (tail, x, b) = memory(src.low, m)
        return Encoded(bytes: rex(w: width == .q, r: src.high, x: x, b: b) + [0x89] + tail, text: "mov \(src.name(width)),\(m.text)")
    }

    static func movImmediate(_ dst: Register, _ value: UInt32) -> Encoded {
        Encoded(bytes: rex(w: false, b: dst.high) + [0xB8 + dst.low] + le32(Int32(bitPattern: value)),
                text: "mov $\(value),\(dst.name(.l))")
    }

    static func alu(_ op: ALU, _ width: Width, _ dst: Register, immediate: Int32) -> Encoded {
        let short = (-128...127).contains(immediate)
        let bytes = rex(w: width == .q, b: dst.high) + [short ? 0x83 : 0x81, modrmRegister(op.rawValue, dst)]
            + (short ? [UInt8(bitPattern: Int8(immediate))] : le32(immediate))
        return Encoded(bytes: bytes, text: "\(op.name) $\(immediate),\(dst.name(width))")
    }

    static func alu(_ op: ALU, _ width: Width, _ dst: Register, _ src: Register) -> Encoded {
        Encoded(bytes: rex(w: width == .q, r: src.high, b: dst.high) + [op.rawValue << 3 | 1, modrmRegister(src.low, dst)],
                text: "\(op.name) \(src.name(width)),\(dst.name(width))")
    }

    static func alu(_ op: ALU, _ width: Width, _ m: Memory, _ src: Register) -> Encoded {
        let (tail, x, b) = memory(src.low, m)
        return Encoded(bytes: rex(w: width == .q, r: src.high, x: x, b: b) + [op.rawValue << 3 | 1] + tail,
                       text: "\(op.name) \(src.name(width)),\(m.text)")
    }

    static func alu(_ op: ALU, _ width: Width, _ m: Memory, immediate: Int8) -> Encoded {
        let (tail, x, b) = memory(op.rawValue, m)
        return Encoded(bytes: rex(w: width == .q, x: x, b: b) + [0x83] + tail + [UInt8(bitPattern: immediate)],
                       text: "\(op.name)\(width == .q ? "q" : "l") $\(immediate),\(m.text)")
    }

    static func test(_ width: Width, _ a: Register, _ b: Register) -> Encoded {
        Encoded(bytes: rex(w: width == .q, r: b.high, b: a.high) + [0x85, modrmRegister(b.low, a)],
                text: "test \(b.name(width)),\(a.name(width))")
    }

    /// `lea disp(%src),%dst`: arithmetic without flags (LEA reads no memory).
    static func lea(_ width: Width, _ dst: Register, _ src: Register, _ displacement: Int8) -> Encoded {
        // rm 4 (%rsp/%r12) needs a SIB, rm 5 with mod 0 is RIP-relative: mod 1 with a disp8 avoids both problems but one.
        var tail: [UInt8] = [0x40 | dst.low << 3 | src.low]
        if src.low == 4 { tail.append(0x24) }
        tail.append(UInt8(bitPattern: displacement))
        return Encoded(bytes: rex(w: width == .q, r: dst.high, b: src.high) + [0x8D] + tail,
                       text: "lea \(displacement)(%\(src.name64)),\(dst.name(width))")
    }

    static let nops: [[UInt8]] = [
        [0x90], [0x66, 0x90], [0x0F, 0x1F, 0x00], [0x0F, 0x1F, 0x40, 0x00], [0x0F, 0x1F, 0x44, 0x00, 0x00],
        [0x66, 0x0F, 0x1F, 0x44, 0x00, 0x00], [0x0F, 0x1F, 0x80, 0, 0, 0, 0], [0x0F, 0x1F, 0x84, 0, 0, 0, 0, 0],
        [0x66, 0x0F, 0x1F, 0x84, 0, 0, 0, 0, 0],
    ]
}

extension Array {
    subscript(safe index: Int) -> Element? { indices.contains(index) ? self[index] : nil }
}

extension Encode {
    /// `mov %src,%dst` in its 8B form (the other direction of the ModRM).
    static func movLoadForm(_ width: Width, _ dst: Register, _ src: Register) -> Encoded {
        Encoded(bytes: rex(w: width == .q, r: dst.high, b: src.high) + [0x8B, modrmRegister(dst.low, src)],
                text: "mov \(src.name(width)),\(dst.name(width))")
    }

    static func jump(rel32: Bool) -> [UInt8] { rel32 ? [0xE9] : [0xEB] }
    static func jcc(_ c: Condition, rel32: Bool) -> [UInt8] { rel32 ? [0x0F, 0x80 | c.rawValue] : [0x70 | c.rawValue] }
}
