/// A witness program before layout: units of instructions that must stay together in one
/// bundle (a restriction and the access it guards, a flag producer and its consumer), labels at
/// unit starts only (so nothing can jump into a unit), and branches to labels resolved after
/// layout.
public struct Program: Sendable {
    public struct Label: Hashable, Sendable {
        let id: Int
        public let name: String
    }

    enum Item: Sendable {
        case instruction(Encoded)
        /// A jump or Jcc to a label: the opcode bytes, then a rel8 or rel32 filled in at layout.
        case branch(opcode: [UInt8], rel32: Bool, target: Label, text: String)

        var size: Int {
            switch self {
            case .instruction(let e): e.bytes.count
            case .branch(let opcode, let rel32, _, _): opcode.count + (rel32 ? 4 : 1)
            }
        }
    }

    struct Unit: Sendable {
        var labels: [Label]
        var items: [Item]
        var comment: String
        var size: Int { items.reduce(0) { $0 + $1.size } }
    }

    var units: [Unit] = []
    private var labelCount = 0
    private var pendingLabels: [Label] = []

    /// The label that stands for the end of the code: jumping there leaves the program (the
    /// end is bundle-aligned, which is where a NaCl jump may leave the code).
    public let exit = Label(id: -1, name: "exit")

    public init() {}

    public mutating func label(_ name: String) -> Label {
        labelCount += 1
        return Label(id: labelCount, name: name)
    }

    /// Places `label` at the next unit.
    public mutating func place(_ label: Label) { pendingLabels.append(label) }

    /// Appends one unit; its instructions stay in one bundle, in this order.
    mutating func emit(_ items: [Item], _ comment: String = "") {
        guard !items.isEmpty else { return }
        units.append(Unit(labels: pendingLabels, items: items, comment: comment))
        pendingLabels = []
    }

    mutating func emit(_ encodings: [Encoded], _ comment: String = "") { emit(encodings.map { Item.instruction($0) }, comment) }
}

/// A program laid out into bundles: the bytes, and the listing that explains them.
public struct LaidOut: Sendable {
    public let bytes: [UInt8]
    public let listing: String
    /// Every distinct instruction encoding's form, for the report.
    public let instructionCount: Int
}

public struct LayoutError: Error, CustomStringConvertible, Sendable {
    public let description: String
}

extension Program {
    /// Packs the units into `bundleSize`-byte bundles, filling every hole with `fillers`
    /// (accepted, harmless instructions, by length), and resolves the branches.
    func layout(bundleSize: Int, fillers: [Encoded]) throws -> LaidOut {
        // Decide, bundle by bundle, which units go in and how the hole at the end is filled.
        var placed: [(unit: Int, offset: Int)] = []
        var pads: [(offset: Int, fill: [Encoded])] = []
        var offset = 0
        var next = 0
        while next < units.count {
            var bundle: [Int] = []
            var used = 0
            var k = next
            while k < units.count && used + units[k].size <= bundleSize {
                bundle.append(k)
                used += units[k].size
                k += 1
            }
            guard !bundle.isEmpty else {
                throw LayoutError(description: "a unit of \(units[next].size) bytes does not fit in a \(bundleSize)-byte bundle")
            }
            // The hole at the end must be fillable; otherwise move the last units to the next bundle.
            var fill = k == units.count && used == 0 ? [] : Self.fill(bundleSize - used, fillers)
            while fill == nil && bundle.count > 1 {
                used -= units[bundle.removeLast()].size
                fill = Self.fill(bundleSize - used, fillers)
            }
            guard let filling = fill else {
                throw LayoutError(description: "no accepted filler fills a \(bundleSize - used)-byte hole")
            }
            for u in bundle {
                placed.append((u, offset))
                offset += units[u].size
            }
            pads.append((offset, filling))
            offset += filling.reduce(0) { $0 + $1.bytes.count }
            next = bundle.last! + 1
        }
        let total = offset
        var labels: [Label: Int] = [exit: total]
        for (u, at) in placed { for label in units[u].labels { labels[label] = at } }

        // Emit bytes and the listing in offset order.
        var bytes: [UInt8] = []
        var listing = ""
        var count = 0
        var padIndex = 0
        func line(_ at: Int, _ b: [UInt8], _ text: String, _ comment: String = "") {
            let hex = b.map { String($0, radix: 16).leftPadded(2) }.joined(separator: " ")
            listing += "  \(String(at, radix: 16).leftPadded(5)):  \(hex + String(repeating: " ", count: max(0, 45 - hex.count))) \(text)"
            listing += comment.isEmpty ? "\n" : "    # \(comment)\n"
        }
        func emitPads(upTo limit: Int) {
            while padIndex < pads.count && pads[padIndex].offset <= limit {
                for filler in pads[padIndex].fill {
                    line(bytes.count, filler.bytes, filler.text, "bundle filler")
                    bytes += filler.bytes
                    count += 1
                }
                padIndex += 1
            }
        }
        for (u, at) in placed {
            emitPads(upTo: at)
            precondition(bytes.count == at)
            if at % bundleSize == 0 { listing += "  # bundle \(at / bundleSize)\n" }
            for label in units[u].labels { listing += "\(label.name):\n" }
            var comment = units[u].comment
            for item in units[u].items {
                switch item {
                case .instruction(let e):
                    line(bytes.count, e.bytes, e.text, comment)
                    bytes += e.bytes
                case .branch(let opcode, let rel32, let target, let text):
                    guard let destination = labels[target] else {
                        throw LayoutError(description: "label \(target.name) is never placed")
                    }
                    let end = bytes.count + opcode.count + (rel32 ? 4 : 1)
                    let rel = destination - end
                    var encoded = opcode
                    if rel32 {
                        encoded += Encode.le32(Int32(rel))
                    } else {
                        guard (-128...127).contains(rel) else {
                            throw LayoutError(description: "\(text) \(target.name): \(rel) bytes is out of rel8 range")
                        }
                        encoded.append(UInt8(bitPattern: Int8(rel)))
                    }
                    line(bytes.count, encoded, "\(text) \(target.name)", comment)
                    bytes += encoded
                }
                comment = ""
                count += 1
            }
        }
        emitPads(upTo: Int.max)
        precondition(bytes.count == total && total % bundleSize == 0)
        return LaidOut(bytes: bytes, listing: listing, instructionCount: count)
    }

    /// Fillers whose lengths add up to exactly `n` (fewest pieces), or nil.
    static func fill(_ n: Int, _ fillers: [Encoded]) -> [Encoded]? {
        guard n > 0 else { return [] }
        var best: [[Encoded]?] = Array(repeating: nil, count: n + 1)
        best[0] = []
        for size in 1...n {
            for filler in fillers where filler.bytes.count <= size {
                if let rest = best[size - filler.bytes.count], best[size] == nil || rest.count + 1 < best[size]!.count {
                    best[size] = rest + [filler]
                }
            }
        }
        return best[n]
    }
}

extension String {
    func leftPadded(_ width: Int) -> String { String(repeating: "0", count: max(0, width - count)) + self }
}
