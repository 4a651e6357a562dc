/// Text from a policy or an input file reaches a terminal: a reason with `\u{1b}[2J` must not
/// clear the screen, nor a right-to-left override reorder a listing (Trojan Source). Control
/// characters (C0 but newline and tab, DEL, C1) and Unicode's bidirectional controls are written
/// as `\x1b` / `\u{202e}`; a carriage return only when no line feed follows (a lone CR rewrites
/// the line on screen; CR LF is a line end, which `ban --dry-run` keeps for a CRLF policy).
/// JSON already escapes these; escaping is idempotent on it.
enum TerminalText {
    static func escaped(_ text: String) -> String {
        guard text.utf8.contains(where: { $0 < 0x20 && $0 != 0x0a && $0 != 0x09 || $0 == 0x7f || $0 >= 0xc2 }) else { return text }
        var out = ""
        out.reserveCapacity(text.utf8.count)
        let scalars = Array(text.unicodeScalars)
        for (k, scalar) in scalars.enumerated() {
            switch scalar.value {
            case 0x0a, 0x09: out.unicodeScalars.append(scalar)
            case 0x0d where k + 1 < scalars.count && scalars[k + 1] == "\n": out.unicodeScalars.append(scalar)
            case 0x00..<0x20, 0x7f:
                out += "\\x" + (scalar.value < 0x10 ? "0" : "") + String(scalar.value, radix: 16)
            case 0x80..<0xa0, 0x200e, 0x200f, 0x202a...0x202e, 0x2066...0x2069:
                out += "\\u{" + String(scalar.value, radix: 16) + "}"
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out
    }
}
