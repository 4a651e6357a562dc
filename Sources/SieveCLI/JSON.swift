/// A JSON value with deterministic output: object keys sorted, no floating-point surprises.
enum JSON: Equatable {
    case string(String)
    case int(Int)
    case double(Double)
    case bool(Bool)
    case null
    case array([JSON])
    case object([String: JSON])

    /// One line, keys sorted: stable enough to diff and to script against.
    var compact: String {
        var out = ""
        write(to: &out)
        return out
    }

    private func write(to out: inout String) {
        switch self {
        case .string(let s): Self.quote(s, into: &out)
        case .int(let n): out += String(n)
        case .double(let d): out += d.isFinite ? String(format3: d) : "null"
        case .bool(let b): out += b ? "true" : "false"
        case .null: out += "null"
        case .array(let items):
            out += "["
            for (i, item) in items.enumerated() {
                if i > 0 { out += "," }
                item.write(to: &out)
            }
            out += "]"
        case .object(let fields):
            out += "{"
            for (i, key) in fields.keys.sorted().enumerated() {
                if i > 0 { out += "," }
                Self.quote(key, into: &out)
                out += ":"
                fields[key]!.write(to: &out)
            }
            out += "}"
        }
    }

    private static func quote(_ s: String, into out: inout String) {
        out += "\""
        for scalar in s.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\t": out += "\\t"
            case "\r": out += "\\r"
            // Below 0x20 as JSON requires; DEL, C1 and the bidirectional controls too, so that the
            // document reaches a terminal as plain text (TerminalText leaves it unchanged).
            case _ where scalar.value < 0x20 || (0x7f..<0xa0).contains(scalar.value) || [0x200e, 0x200f].contains(scalar.value)
                || (0x202a...0x202e).contains(scalar.value) || (0x2066...0x2069).contains(scalar.value):
                let hex = String(scalar.value, radix: 16)
                out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            default: out.unicodeScalars.append(scalar)
            }
        }
        out += "\""
    }
}

/// A JSON object written a member at a time, for documents too large to build whole (findings
/// streamed as the verifier reports them). Members must come in the order `compact` writes them,
/// keys sorted: `member` checks it, so a streamed document is the one `compact` would print.
struct JSONObjectStream {
    private var lastKey: String?

    /// `after`: the key of the last member already written (nil: the object is empty so far).
    init(after key: String? = nil) { lastKey = key }

    /// `"key":`, after a comma unless it is the first member.
    mutating func key(_ key: String) -> String {
        precondition(lastKey.map { $0 < key } ?? true, "JSON keys out of order: \(lastKey ?? "") before \(key)")
        defer { lastKey = key }
        return (lastKey == nil ? "" : ",") + JSON.string(key).compact + ":"
    }

    mutating func member(_ key: String, _ value: JSON) -> String { self.key(key) + value.compact }
}

extension String {
    /// Three decimals, without Foundation's locale-dependent formatting.
    init(format3 value: Double) {
        let scaled = (value * 1000).rounded()
        let whole = Int(scaled / 1000)
        let fraction = Int(abs(scaled).truncatingRemainder(dividingBy: 1000))
        let sign = value < 0 && whole == 0 ? "-" : ""
        let digits = String(fraction)
        self = "\(sign)\(whole).\(String(repeating: "0", count: 3 - digits.count))\(digits)"
    }
}
