import Policy
import Verifier
import X86

/// `sieve map`'s picture of a policy: one 16×16 grid per opcode map, each cell one opcode byte,
/// coloured by what the policy decides for the forms there, or by how that changed from another
/// policy. A pure function of its inputs: the same policies give the same SVG bytes.
public struct OpcodeMapPicture: Sendable {
    /// What a policy and its sandbox model decide for one form.
    public enum Outcome: Sendable, Equatable {
        case accepted
        /// Instance rules decide: some encodings of the form are accepted.
        case conditional
        case refused
        /// The sandbox model refuses the form whatever the policy says.
        case refusedByModel

        init(_ plan: FormPlan, _ model: SandboxSettings.Model) {
            if model == .naclX86_64 && plan.alwaysRefusedByNaCl { self = .refusedByModel; return }
            switch plan.decision {
            case .accept: self = .accepted
            case .conditional: self = .conditional
            case .refuse: self = .refused
            }
        }

        var admits: Bool { self == .accepted || self == .conditional }

        /// Code sees no difference between a policy's refusal and the model's.
        func sameVerdict(as other: Outcome) -> Bool { self == other || (!admits && !other.admits) }

        var text: String {
            switch self {
            case .accepted: "accepted"
            case .conditional: "partly (instance rules decide)"
            case .refused: "refused"
            case .refusedByModel: "refused by the sandbox model"
            }
        }
    }

    public enum Shade: String, Sendable, CaseIterable {
        case accepted, partly, refused
        case newlyAccepted = "newly-accepted", newlyRefused = "newly-refused", changedPartly = "changed-partly"
        case unchangedAccepted = "unchanged-accepted", unchangedPartly = "unchanged-partly", unchangedRefused = "unchanged-refused"
        case invalid
        /// A legacy prefix or escape byte: no form starts there, the byte selects another table.
        case prefixOrEscape = "prefix-escape"

        public var name: String {
            switch self {
            case .accepted: "accepted"
            case .partly: "partly accepted"
            case .refused: "refused"
            case .newlyAccepted: "newly accepted"
            case .newlyRefused: "newly refused"
            case .changedPartly: "changed in part"
            case .unchangedAccepted: "accepted in both"
            case .unchangedPartly: "partly accepted in both"
            case .unchangedRefused: "refused in both"
            case .invalid: "invalid"
            case .prefixOrEscape: "prefix/escape"
            }
        }

        var fill: String {
            switch self {
            case .accepted: "#8fd19e"
            case .partly: "#ffd97a"
            case .refused: "#f4a09a"
            case .newlyAccepted: "#3fb86a"
            case .newlyRefused: "#e8554e"
            case .changedPartly: "#f5a638"
            case .unchangedAccepted: "#dcefe0"
            case .unchangedPartly: "#f7eed0"
            case .unchangedRefused: "#f6dfdd"
            case .invalid: "#f2f2f2"
            case .prefixOrEscape: "#c9d3e6"
            }
        }
    }

    /// One form at a cell: the policy's outcome and, when comparing, the other policy's.
    public struct Entry: Sendable {
        public let form: Form
        public let outcome: Outcome
        public let before: Outcome?

        var changed: Bool { before.map { !outcome.sameVerdict(as: $0) } ?? false }
    }

    public struct Cell: Sendable {
        public let opcode: UInt8
        /// The forms whose opcode (or opcode+r range) covers this byte, in database order.
        public let entries: [Entry]
        public let shade: Shade
        /// A prefix or escape byte's short name and meaning.
        let escape: (label: String, meaning: String)?
    }

    /// One opcode map: the encoding and map its forms share, and how the picture names it.
    public struct Space: Sendable {
        public let encoding: Encoding
        public let map: OpcodeMap
        public let title: String
        /// What precedes the opcode byte in a cell's name (`0F 38 `, `VEX.0F `).
        let escapeBytes: String
        let escapes: [UInt8: (label: String, meaning: String)]

        public var id: String { "\(encoding.rawValue)-\(map.rawValue)" }
    }

    public struct Grid: Sendable {
        public let space: Space
        /// 256 cells, indexed by opcode.
        public let cells: [Cell]
        public var formCount: Int { Set(cells.flatMap { $0.entries.map(\.form.index) }).count }
    }

    /// The grids by row: each encoding starts a row, at most three grids to a row.
    public static let rows: [[Space]] = {
        func space(_ encoding: Encoding, _ map: OpcodeMap, _ title: String, _ escapeBytes: String,
                   _ escapes: [UInt8: (String, String)] = [:]) -> Space {
            Space(encoding: encoding, map: map, title: title, escapeBytes: escapeBytes,
                  escapes: escapes.mapValues { (label: $0.0, meaning: $0.1) })
        }
        var oneByteEscapes: [UInt8: (String, String)] = [
            0x0F: ("esc 0F", "escape to the 0F map"), 0x26: ("es:", "ES segment override (ignored in 64-bit mode)"),
            0x2E: ("cs:", "CS segment override (ignored in 64-bit mode)"), 0x36: ("ss:", "SS segment override (ignored in 64-bit mode)"),
            0x3E: ("ds:", "DS segment override (ignored in 64-bit mode)"), 0x62: ("EVEX", "EVEX prefix"),
            0x64: ("fs:", "FS segment override"), 0x65: ("gs:", "GS segment override"),
            0x66: ("o16", "operand-size prefix (or mandatory 66)"), 0x67: ("a32", "address-size prefix"),
            0xC4: ("VEX3", "three-byte VEX prefix"), 0xC5: ("VEX2", "two-byte VEX prefix"),
            0xF0: ("lock", "LOCK prefix"), 0xF2: ("repne", "REPNE prefix (or mandatory F2)"), 0xF3: ("rep", "REP prefix (or mandatory F3)"),
        ]
        for rex in UInt8(0x40)...0x4F { oneByteEscapes[rex] = ("REX", "REX prefix") }
        let map0FEscapes: [UInt8: (String, String)] = [
            0x0F: ("3DNow!", "escape to 3DNow! (opcode after the operands)"), 0x38: ("esc 38", "escape to the 0F 38 map"),
            0x3A: ("esc 3A", "escape to the 0F 3A map"),
        ]
        return [
            [space(.legacy, .oneByte, "Legacy one-byte", "", oneByteEscapes), space(.legacy, .map0F, "Legacy 0F", "0F ", map0FEscapes),
             space(.legacy, .map0F38, "Legacy 0F 38", "0F 38 ")],
            [space(.legacy, .map0F3A, "Legacy 0F 3A", "0F 3A "), space(.threeDNow, .threeDNow, "3DNow! (0F 0F /r opcode)", "0F 0F /r ")],
            [space(.vex, .map0F, "VEX 0F", "VEX.0F "), space(.vex, .map0F38, "VEX 0F 38", "VEX.0F38 "),
             space(.vex, .map0F3A, "VEX 0F 3A", "VEX.0F3A ")],
            [space(.evex, .map0F, "EVEX 0F", "EVEX.0F "), space(.evex, .map0F38, "EVEX 0F 38", "EVEX.0F38 "),
             space(.evex, .map0F3A, "EVEX 0F 3A", "EVEX.0F3A ")],
            [space(.evex, .map5, "EVEX map 5", "EVEX.MAP5 "), space(.evex, .map6, "EVEX map 6", "EVEX.MAP6 ")],
            [space(.xop, .xop8, "XOP map 8", "XOP.M8 "), space(.xop, .xop9, "XOP map 9", "XOP.M9 "), space(.xop, .xopA, "XOP map A", "XOP.MA ")],
        ]
    }()

    public let policy: CompiledPolicy
    public let other: CompiledPolicy?
    public let grids: [Grid]

    /// The picture of `policy`, or of the change from `other` to `policy`.
    public init(_ policy: CompiledPolicy, against other: CompiledPolicy? = nil) {
        precondition(other.map { $0.database === policy.database } ?? true, "compared policies must share the instruction database")
        self.policy = policy
        self.other = other
        let spaces = Array(Self.rows.joined())
        var formsAt = [[[Form]]](repeating: [[Form]](repeating: [], count: 256), count: spaces.count)
        for form in policy.database.forms {
            guard let k = spaces.firstIndex(where: { $0.encoding == form.encoding && $0.map == form.map }) else { continue }
            for opcode in Int(form.opcode)...Int(form.opcode) + (form.opcodeAddsRegister ? 7 : 0) where opcode < 256 {
                formsAt[k][opcode].append(form)
            }
        }
        grids = zip(spaces, formsAt).map { space, forms in
            Grid(space: space, cells: (0..<256).map { opcode in
                let entries = forms[opcode].map { form in
                    Entry(form: form, outcome: Outcome(policy.plans[form.index], policy.model), before: other.map { Outcome($0.plans[form.index], $0.model) })
                }
                let escape = entries.isEmpty ? space.escapes[UInt8(opcode)] : nil
                return Cell(opcode: UInt8(opcode), entries: entries,
                            shade: Self.shade(entries, escape: escape != nil, comparing: other != nil), escape: escape)
            })
        }
    }

    static func shade(_ entries: [Entry], escape: Bool, comparing: Bool) -> Shade {
        func status(_ outcomes: [Outcome]) -> Shade {
            if outcomes.allSatisfy({ $0 == .accepted }) { return .accepted }
            return outcomes.contains(where: \.admits) ? .partly : .refused
        }
        if entries.isEmpty { return escape ? .prefixOrEscape : .invalid }
        let now = status(entries.map(\.outcome))
        guard comparing else { return now }
        let changed = entries.contains(where: \.changed)
        switch now {
        case .accepted: return changed ? .newlyAccepted : .unchangedAccepted
        case .refused: return changed ? .newlyRefused : .unchangedRefused
        default: return changed ? .changedPartly : .unchangedPartly
        }
    }

    /// The shades this picture can use, in the legend's order.
    public var shades: [Shade] {
        other == nil ? [.accepted, .partly, .refused, .invalid, .prefixOrEscape]
            : [.newlyAccepted, .newlyRefused, .changedPartly, .unchangedAccepted, .unchangedPartly, .unchangedRefused, .invalid, .prefixOrEscape]
    }

    public func count(_ shade: Shade) -> Int { grids.reduce(0) { $0 + $1.cells.count { $0.shade == shade } } }

    public var title: String {
        other.map { "Opcode map: \(policy.policy.name) against \($0.policy.name)" } ?? "Opcode map: \(policy.policy.name)"
    }
}

// MARK: - SVG

extension OpcodeMapPicture {
    /// Sizes in pixels: cells wide enough for a nine-letter mnemonic at 11 px.
    enum Layout {
        static let margin = 32, cellWidth = 66, cellHeight = 38
        static let rowLabelWidth = 30, columnLabelHeight = 22, gridTitleHeight = 32
        static let gapX = 48, gapY = 36, headerHeight = 178, columns = 3
        static let gridWidth = rowLabelWidth + 16 * cellWidth
        static let gridHeight = gridTitleHeight + columnLabelHeight + 16 * cellHeight
        static let legendSlot = 320
    }

    public func svg() -> String {
        let width = 2 * Layout.margin + Layout.columns * Layout.gridWidth + (Layout.columns - 1) * Layout.gapX
        let height = Layout.headerHeight + Self.rows.count * (Layout.gridHeight + Layout.gapY) + Layout.margin
        let x0 = Layout.margin
        var out = """
            <?xml version="1.0" encoding="UTF-8"?>
            <svg xmlns="http://www.w3.org/2000/svg" width="\(width)" height="\(height)" viewBox="0 0 \(width) \(height)" \
            font-family="DejaVu Sans, Helvetica, Arial, sans-serif" fill="#222222">
            <title>\(Self.escaped(title))</title>
            <desc>Generated by sieve map: \(Self.escaped(subtitle)).</desc>
            <rect width="\(width)" height="\(height)" fill="#ffffff"/>
            <text x="\(x0)" y="\(Layout.margin + 30)" font-size="34" font-weight="bold">\(Self.escaped(title))</text>
            <text x="\(x0)" y="\(Layout.margin + 64)" font-size="17">\(Self.escaped(subtitle))</text>
            <text x="\(x0)" y="\(Layout.margin + 90)" font-size="17">\(Self.escaped(explanation))</text>

            """
        out += legend(y: Layout.margin + 110)
        var y = Layout.headerHeight
        var k = 0
        for row in Self.rows {
            for column in row.indices {
                out += grid(grids[k], x: x0 + column * (Layout.gridWidth + Layout.gapX), y: y)
                k += 1
            }
            y += Layout.gridHeight + Layout.gapY
        }
        return out + "</svg>\n"
    }

    private func describe(_ compiled: CompiledPolicy) -> String {
        "policy \(compiled.policy.name) (hash \(compiled.contentHashHex), model \(compiled.model.rawValue))"
    }

    private var subtitle: String {
        describe(policy) + (other.map { "; against " + describe($0) } ?? "") + "; database \(policy.database.version)"
    }

    private var explanation: String {
        guard let other else {
            return "One cell per opcode byte: accepted if every form there is, partly if some are, refused if none is; hover a cell for its forms."
        }
        return "One cell per opcode byte, coloured by what changed from \(other.policy.name) to \(policy.policy.name); hover a cell for its forms."
    }

    private func legend(y: Int) -> String {
        var out = "<g id=\"legend\" font-size=\"17\">\n"
        for (k, shade) in shades.enumerated() {
            let x = Layout.margin + k * Layout.legendSlot
            out += "<rect x=\"\(x)\" y=\"\(y)\" width=\"30\" height=\"22\" fill=\"\(shade.fill)\" stroke=\"#888888\"/>"
            out += "<text x=\"\(x + 40)\" y=\"\(y + 17)\">\(Self.escaped(shade.name)): \(count(shade))</text>\n"
        }
        return out + "</g>\n"
    }

    private func grid(_ grid: Grid, x: Int, y: Int) -> String {
        let top = Layout.gridTitleHeight + Layout.columnLabelHeight, left = Layout.rowLabelWidth
        var out = "<g id=\"grid-\(grid.space.id)\" transform=\"translate(\(x),\(y))\">\n"
        out += "<text x=\"0\" y=\"22\" font-size=\"22\" font-weight=\"bold\">\(Self.escaped(grid.space.title))"
        out += "<tspan font-size=\"16\" font-weight=\"normal\" dx=\"12\">\(grid.formCount) forms</tspan></text>\n"
        out += "<g font-family=\"DejaVu Sans Mono, Menlo, Consolas, monospace\" font-size=\"14\" fill=\"#555555\" text-anchor=\"middle\">\n"
        for digit in 0..<16 {
            out += "<text x=\"\(left + digit * Layout.cellWidth + Layout.cellWidth / 2)\" y=\"\(top - 6)\">x\(Self.hexDigit(digit))</text>"
            out += "<text x=\"\(left / 2)\" y=\"\(top + digit * Layout.cellHeight + Layout.cellHeight / 2 + 5)\">\(Self.hexDigit(digit))x</text>\n"
        }
        out += "</g>\n<g font-family=\"DejaVu Sans Mono, Menlo, Consolas, monospace\" text-anchor=\"middle\">\n"
        for cell in grid.cells {
            let cx = left + Int(cell.opcode & 15) * Layout.cellWidth, cy = top + Int(cell.opcode >> 4) * Layout.cellHeight
            out += "<g><title>\(Self.escaped(tooltip(cell, in: grid.space)))</title>"
            out += "<rect id=\"\(grid.space.id)-\(Self.hex(cell.opcode).lowercased())\" class=\"\(cell.shade.rawValue)\" "
            out += "x=\"\(cx)\" y=\"\(cy)\" width=\"\(Layout.cellWidth - 2)\" height=\"\(Layout.cellHeight - 2)\" fill=\"\(cell.shade.fill)\"/>"
            if let label = label(cell) {
                let middle = cx + Layout.cellWidth / 2 - 1
                out += "<text x=\"\(middle)\" y=\"\(cy + (label.others.isEmpty ? 23 : 16))\" font-size=\"11\">\(Self.escaped(label.name))</text>"
                if !label.others.isEmpty {
                    out += "<text x=\"\(middle)\" y=\"\(cy + 30)\" font-size=\"9\" fill=\"#555555\">\(label.others)</text>"
                }
            }
            out += "</g>\n"
        }
        return out + "</g>\n</g>\n"
    }

    /// A cell's mnemonic, truncated to fit, and how many other mnemonics share the cell: the
    /// first changed form when comparing, else the first accepted one, else the first.
    private func label(_ cell: Cell) -> (name: String, others: String)? {
        if let escape = cell.escape { return (escape.label, "") }
        guard let shown = cell.entries.first(where: \.changed) ?? cell.entries.first(where: \.outcome.admits) ?? cell.entries.first
        else { return nil }
        let mnemonic = shown.form.mnemonic
        let others = Set(cell.entries.map(\.form.mnemonic)).count - 1
        return (mnemonic.count > 9 ? String(mnemonic.prefix(8)) + "…" : mnemonic, others > 0 ? "+\(others)" : "")
    }

    /// `0F AE: partly accepted, 52 forms` (and how many changed) and one line per form with its outcome.
    private func tooltip(_ cell: Cell, in space: Space) -> String {
        let name = space.escapeBytes + Self.hex(cell.opcode)
        if let escape = cell.escape { return "\(name): \(escape.meaning)" }
        if cell.entries.isEmpty { return "\(name): invalid, no form decodes here" }
        let changed = other == nil ? "" : ", \(cell.entries.count(where: \.changed)) changed"
        var lines = ["\(name): \(cell.shade.name), \(cell.entries.count) form\(cell.entries.count == 1 ? "" : "s")\(changed)"]
        for entry in cell.entries {
            let outcome = entry.before.map { $0 == entry.outcome ? entry.outcome.text : "\($0.text) → \(entry.outcome.text)" }
            lines.append("\(entry.form.id) (\(entry.form.instructionString)): \(outcome ?? entry.outcome.text)")
        }
        return lines.joined(separator: "\n")
    }

    static func hexDigit(_ digit: Int) -> String { String(digit, radix: 16, uppercase: true) }
    static func hex(_ byte: UInt8) -> String { hexDigit(Int(byte >> 4)) + hexDigit(Int(byte & 15)) }

    /// Text for XML character data and attribute values: markup characters escaped, and the
    /// control characters XML 1.0 cannot carry dropped.
    static func escaped(_ text: String) -> String {
        var out = ""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            case "'": out += "&apos;"
            case "\n", "\t": out.unicodeScalars.append(scalar)
            default: if scalar.value >= 0x20 && scalar.value != 0xFFFE && scalar.value != 0xFFFF { out.unicodeScalars.append(scalar) }
            }
        }
        return out
    }
}
