/// A problem in a policy, pointing at its source: `file:line:col: error: message`, the line,
/// a caret, and a hint where one helps. Collected, never thrown one at a time.
public struct Diagnostic: Sendable, Hashable {
    public enum Severity: String, Sendable, Comparable {
        case error, warning

        public static func < (a: Severity, b: Severity) -> Bool { a == .error && b == .warning }
    }

    public let severity: Severity
    public let file: String
    public let mark: SourceMark
    public let message: String
    public let hint: String?

    public init(_ severity: Severity, _ file: String, _ mark: SourceMark, _ message: String, hint: String? = nil) {
        self.severity = severity
        self.file = file
        self.mark = mark
        self.message = message
        self.hint = hint
    }

    public var location: String { "\(file):\(mark.line):\(mark.column)" }

    /// The compiler-style rendering; `source` is the file's text when it can be read.
    public func rendered(source: [UInt8]?) -> String {
        var out = "\(location): \(severity.rawValue): \(message)"
        if let line = source.flatMap({ Self.line(mark.line, of: $0) }) {
            out += "\n  \(line)\n  " + String(repeating: " ", count: max(0, min(mark.column - 1, line.count))) + "^"
        }
        if let hint { out += "\n  hint: \(hint)" }
        return out
    }

    /// Line `number` (1-based) of `source`, tabs as spaces so that the caret lines up.
    static func line(_ number: Int, of source: [UInt8]) -> String? {
        var current = 1, start = 0
        for (i, byte) in source.enumerated() where byte == 0x0A {
            if current == number { return text(source[start..<i]) }
            current += 1
            start = i + 1
        }
        return current == number && start < source.count ? text(source[start...]) : nil
    }

    private static func text(_ bytes: ArraySlice<UInt8>) -> String {
        let printable = bytes.prefix(200).map { $0 == 0x09 ? 0x20 : ($0 < 0x20 ? 0x3F : $0) }
        return String(decoding: printable, as: UTF8.self)
    }
}

/// Ranks close names for "did you mean" hints (edit distance, at most a third of the word).
public enum Suggestion {
    public static func closest(to word: String, in candidates: some Sequence<String>) -> String? {
        let w = Array(word.lowercased().utf8)
        var best: (String, Int)?
        for candidate in candidates {
            let c = Array(candidate.utf8)
            if abs(c.count - w.count) > 3 { continue }
            let d = distance(w, c)
            if d <= max(1, w.count / 3), best == nil || d < best!.1 || (d == best!.1 && candidate < best!.0) {
                best = (candidate, d)
            }
        }
        return best?.0
    }

    static func distance(_ a: [UInt8], _ b: [UInt8]) -> Int {
        var previous = Array(0...b.count)
        for (i, x) in a.enumerated() {
            var current = [i + 1]
            for (j, y) in b.enumerated() {
                current.append(min(previous[j + 1] + 1, current[j] + 1, previous[j] + (x == y ? 0 : 1)))
            }
            previous = current
        }
        return previous[b.count]
    }
}
