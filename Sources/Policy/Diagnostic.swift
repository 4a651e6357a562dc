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
        rendered(lines: source.map(SourceLines.init))
    }

    /// The same, with the file's lines indexed once: many diagnostics of one file cost O(1) each.
    public func rendered(lines: SourceLines?) -> String {
        var out = "\(location): \(severity.rawValue): \(message)"
        if let line = lines?.line(mark.line) {
            out += "\n  \(line)\n  " + String(repeating: " ", count: max(0, min(mark.column - 1, line.count))) + "^"
        }
        if let hint { out += "\n  hint: \(hint)" }
        return out
    }

    /// Renders `diagnostics`, each file's lines indexed once.
    public static func rendered(_ diagnostics: [Diagnostic], sources: [String: [UInt8]]) -> String {
        var out: [String] = []
        render(diagnostics, sources: sources) { out.append($0) }
        return out.joined(separator: "\n")
    }

    /// Renders `diagnostics` one by one into `body` (a policy may have a hundred thousand).
    public static func render(_ diagnostics: [Diagnostic], sources: [String: [UInt8]], into body: (String) -> Void) {
        var lines: [String: SourceLines] = [:]
        for d in diagnostics {
            if lines[d.file] == nil, let source = sources[d.file] { lines[d.file] = SourceLines(source) }
            body(d.rendered(lines: lines[d.file]))
        }
    }

    /// Line `number` (1-based) of `source`, tabs as spaces so that the caret lines up.
    static func line(_ number: Int, of source: [UInt8]) -> String? {
        SourceLines(source).line(number)
    }
}

/// A file's lines, found once.
public struct SourceLines: Sendable {
    let source: [UInt8]
    /// Where each line starts; a final newline starts no line.
    let starts: [Int]

    public init(_ source: [UInt8]) {
        self.source = source
        var starts = [0]
        for (i, byte) in source.enumerated() where byte == 0x0A && i + 1 < source.count { starts.append(i + 1) }
        self.starts = source.isEmpty ? [] : starts
    }

    /// Line `number` (1-based), tabs as spaces, control bytes as '?', at most 200 bytes.
    public func line(_ number: Int) -> String? {
        guard number >= 1, number <= starts.count else { return nil }
        let start = starts[number - 1]
        let end = number < starts.count ? starts[number] - 1 : (source.last == 0x0A ? source.count - 1 : source.count)
        let printable = source[start..<max(start, end)].prefix(200).map { $0 == 0x09 ? 0x20 : ($0 < 0x20 ? 0x3F : $0) }
        return String(decoding: printable, as: UTF8.self)
    }
}

/// "Did you mean" hints search a vocabulary each (a thousand mnemonics): a policy of 50,000
/// typos gets them for its first `maximumHints` errors and plain errors after, so that its
/// errors cost time in proportion to their number. The candidates are built only when used.
public struct HintBudget: Sendable {
    public static let maximumHints = 100
    private var remaining = maximumHints

    public init() {}

    public mutating func closest<Candidates: Sequence<String>>(to word: String, in candidates: @autoclosure () -> Candidates) -> String? {
        guard remaining > 0 else { return nil }
        remaining -= 1
        return Suggestion.closest(to: word, in: candidates())
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
