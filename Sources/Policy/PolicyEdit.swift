/// Edits of a policy file as text, so that the user's comments, order and formatting stay as
/// they were: `sieve ban` appends one item to the top-level `ban:` list (or adds the list).
/// libyaml gives the positions; the new text follows the file's own indentation and line endings.
///
/// Every value written is a double-quoted YAML scalar, so no value can add a key, and the edit
/// is checked after the fact: the edited text must parse to the original document with exactly
/// the one new ban appended, or the edit is refused (a position that libyaml counts differently,
/// say after a lone CR or U+2028, cannot move the ban into another list).
public enum PolicyEdit {
    public struct Failure: Error, CustomStringConvertible, Sendable {
        public let description: String
    }

    /// The selector keys a ban may use (the keys of a policy selector).
    public static var selectorKeys: [String] { PolicyFileReader.selectorKeys }

    /// The source with a ban of `selector` (key → values, in order) appended.
    public static func appendingBan(to source: String, selector: [(key: String, values: [String])], reason: String,
                                    refs: [String]) throws -> String {
        for field in selector {
            guard selectorKeys.contains(field.key) else {
                throw Failure(description: "unknown selector key '\(field.key)' (keys: \(selectorKeys.joined(separator: ", ")))")
            }
            guard !field.values.isEmpty else { throw Failure(description: "selector key '\(field.key)' has no value") }
        }
        guard !selector.isEmpty else { throw Failure(description: "the ban has no selector") }
        let root = try parse(source, what: "the policy")
        guard case .mapping(let entries, _)? = root else { throw Failure(description: "the policy is not a YAML mapping") }
        let edited = try inserting(selector, reason, refs, into: source, entries: entries)
        try checkAppended(selector, reason, refs, original: entries, edited: parse(edited, what: "the edited policy"))
        return edited
    }

    /// The text edit: the new item's lines at the end of the `ban:` list.
    private static func inserting(_ selector: [(key: String, values: [String])], _ reason: String, _ refs: [String],
                                  into source: String, entries: [(key: YAMLNode, value: YAMLNode)]) throws -> String {
        // Lines split at LF only (a CRLF line keeps its CR, which new lines copy): Swift's
        // Character treats CR LF as one, so the split is done on the UTF-8 bytes.
        var lines = source.utf8.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false)
            .map { String(decoding: $0, as: UTF8.self) }
        if lines.last == "" { lines.removeLast() } else if !lines.isEmpty, lines[0].utf8.last == 13 {
            lines[lines.count - 1] += "\r"   // the last line gets the file's line ending too
        }
        let cr = lines.first?.utf8.last == 13 ? "\r" : ""
        func item(_ indent: String) -> [String] { Self.item(indent: indent, selector, reason, refs).map { $0 + cr } }

        guard let index = entries.firstIndex(where: { $0.key.scalar == "ban" }) else {
            // No ban list yet: add one at the end, in the usual two-space style.
            lines += ["ban:" + cr] + item("  ")
            return lines.joined(separator: "\n") + "\n"
        }
        guard case .sequence(let items, let mark) = entries[index].value else {
            throw Failure(description: "\(entries[index].value.mark.line):\(entries[index].value.mark.column): 'ban' is not a list")
        }
        guard mark.line >= 1 && mark.line <= lines.count else { throw Failure(description: "the policy's lines do not match its YAML") }
        let first = lines[mark.line - 1]
        guard first.count >= mark.column else { throw Failure(description: "the policy's lines do not match its YAML") }
        let dashColumn = first.index(first.startIndex, offsetBy: mark.column - 1)
        if first[dashColumn...].hasPrefix("[") {
            guard items.isEmpty else {
                throw Failure(description: "\(mark.line):\(mark.column): 'ban' is a flow list; write it as a block list to use sieve ban")
            }
            // `ban: []`: the empty list becomes a block list.
            lines[mark.line - 1] = String(first[..<dashColumn]).trimmingTrailingSpaces + (first.utf8.last == 13 ? "\r" : "")
            lines.insert(contentsOf: item("  "), at: mark.line)
            return lines.joined(separator: "\n") + "\n"
        }
        let indent = String(repeating: " ", count: mark.column - 1)
        // The list ends before the next top-level key (or the end of the file); comments and
        // blank lines just before that key belong to it.
        var end = index + 1 < entries.count ? entries[index + 1].key.mark.line - 1 : lines.count
        guard end >= mark.line && end <= lines.count else { throw Failure(description: "the policy's lines do not match its YAML") }
        while end > mark.line && (lines[end - 1].trimmingTrailingSpaces.isEmpty || lines[end - 1].drop { $0 == " " }.hasPrefix("#")) {
            end -= 1
        }
        lines.insert(contentsOf: item(indent), at: end)
        return lines.joined(separator: "\n") + "\n"
    }

    static func item(indent: String, _ selector: [(key: String, values: [String])], _ reason: String, _ refs: [String]) -> [String] {
        var out: [String] = []
        for (k, field) in selector.enumerated() {
            let value = field.values.count == 1 ? quoted(field.values[0]) : "[" + field.values.map(quoted).joined(separator: ", ") + "]"
            out.append(indent + (k == 0 ? "- " : "  ") + "\(field.key): \(value)")
        }
        out.append(indent + "  reason: " + quoted(reason))
        if !refs.isEmpty { out.append(indent + "  refs: [" + refs.map(quoted).joined(separator: ", ") + "]") }
        return out
    }

    /// A double-quoted YAML scalar: every control character and YAML line break escaped, so
    /// the value stays one scalar on one line whatever it holds.
    static func quoted(_ text: String) -> String {
        var out = "\""
        for ch in text.unicodeScalars {
            switch ch {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\t": out += "\\t"
            case "\r": out += "\\r"
            case "\u{0}"..."\u{1F}", "\u{7F}"..."\u{9F}", "\u{2028}", "\u{2029}", "\u{FEFF}":
                let hex = String(ch.value, radix: 16, uppercase: true)
                out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            default: out.unicodeScalars.append(ch)
            }
        }
        return out + "\""
    }

    /// A selector written `key=value` on a command line (a bare word is a mnemonic); a
    /// comma-separated value is a list. The key must be a selector key.
    public static func selectorField(_ token: String) throws -> (key: String, values: [String]) {
        guard let eq = token.firstIndex(of: "=") else {
            guard !token.isEmpty else { throw Failure(description: "an empty selector") }
            return ("mnemonic", [token])
        }
        let key = String(token[..<eq]), value = token[token.index(after: eq)...]
        guard selectorKeys.contains(key) else {
            throw Failure(description: "unknown selector key '\(key)' in '\(token)' (keys: \(selectorKeys.joined(separator: ", ")))")
        }
        let values = value.split(separator: ",").map { String($0.drop { $0 == " " }).trimmingTrailingSpaces }.filter { !$0.isEmpty }
        guard !values.isEmpty else { throw Failure(description: "no value in '\(token)'") }
        return (key, values)
    }

    // MARK: - The after-the-fact check

    private static func parse(_ text: String, what: String) throws -> YAMLNode? {
        do { return try YAMLReader.parse(Array(text.utf8)) } catch {
            throw Failure(description: "\(what): \(error.mark.line):\(error.mark.column): \(error.message)")
        }
    }

    /// The edited document must be the original one with the new ban last in its `ban` list
    /// (the list added at the end if there was none), and nothing else changed.
    private static func checkAppended(_ selector: [(key: String, values: [String])], _ reason: String, _ refs: [String],
                                      original: [(key: YAMLNode, value: YAMLNode)], edited: YAMLNode?) throws {
        var pairs: [(Shape, Shape)] = selector.map {
            (.scalar($0.key), $0.values.count == 1 ? .scalar($0.values[0]) : .list($0.values.map(Shape.scalar)))
        }
        pairs.append((.scalar("reason"), .scalar(reason)))
        if !refs.isEmpty { pairs.append((.scalar("refs"), .list(refs.map(Shape.scalar)))) }
        let newItem = Shape.mapping(pairs)
        var expected = original.map { (key: Shape($0.key), value: Shape($0.value)) }
        if let index = expected.firstIndex(where: { $0.key == .scalar("ban") }), case .list(let items) = expected[index].value {
            expected[index].value = .list(items + [newItem])
        } else {
            expected.append((.scalar("ban"), .list([newItem])))
        }
        guard let edited, Shape(edited) == .mapping(expected.map { ($0.key, $0.value) }) else {
            throw Failure(description: "the edit would change more than the ban list (is the file's layout unusual? add the ban by hand)")
        }
    }

    /// A YAML node's content without positions or styles, for comparing documents.
    private indirect enum Shape: Equatable {
        case scalar(String)
        case list([Shape])
        case mapping([(Shape, Shape)])

        init(_ node: YAMLNode) {
            switch node {
            case .scalar(let s, _, _): self = .scalar(s)
            case .sequence(let items, _): self = .list(items.map(Shape.init))
            case .mapping(let pairs, _): self = .mapping(pairs.map { (Shape($0.key), Shape($0.value)) })
            }
        }

        static func == (a: Shape, b: Shape) -> Bool {
            switch (a, b) {
            case (.scalar(let x), .scalar(let y)): return x == y
            case (.list(let x), .list(let y)): return x == y
            case (.mapping(let x), .mapping(let y)):
                return x.count == y.count && zip(x, y).allSatisfy { $0.0 == $1.0 && $0.1 == $1.1 }
            default: return false
            }
        }
    }

    // MARK: - The diff

    /// A unified diff of `original` to `edited` (one hunk, three lines of context) that
    /// `patch -p0` and `git apply` both accept, run from the working directory: a relative
    /// path is written `./path` (git strips one component, patch none).
    public static func diff(_ original: String, _ edited: String, path: String) -> String {
        let a = linesKeepingBreaks(original), b = linesKeepingBreaks(edited)
        func same(_ x: Substring, _ y: Substring) -> Bool { x.utf8.elementsEqual(y.utf8) }   // bytes, not canonical equivalence
        var start = 0
        while start < a.count && start < b.count && same(a[start], b[start]) { start += 1 }
        if start == a.count && start == b.count { return "" }
        var tailA = a.count, tailB = b.count
        while tailA > start && tailB > start && same(a[tailA - 1], b[tailB - 1]) { tailA -= 1; tailB -= 1 }
        let context = 3
        let low = max(0, start - context), highA = min(a.count, tailA + context), highB = tailB + (highA - tailA)
        func range(_ low: Int, _ high: Int) -> String {
            // An empty range names the line before it (`-0,0` for the start of the file).
            high == low ? "\(low),0" : "\(low + 1),\(high - low)"
        }
        let label = path.hasPrefix("/") || path.hasPrefix("./") || path.hasPrefix("../") ? path : "./" + path
        var out = "--- \(label)\n+++ \(label)\n@@ -\(range(low, highA)) +\(range(low, highB)) @@\n"
        func emit(_ mark: String, _ line: Substring) {
            out += mark + line
            if line.utf8.last != UInt8(ascii: "\n") { out += "\n\\ No newline at end of file\n" }
        }
        for line in a[low..<start] { emit(" ", line) }
        for line in a[start..<tailA] { emit("-", line) }
        for line in b[start..<tailB] { emit("+", line) }
        for line in a[tailA..<highA] { emit(" ", line) }
        return out
    }

    /// The lines of a text, each with its LF (the last one without, if the text does not end in one).
    private static func linesKeepingBreaks(_ text: String) -> [Substring] {
        var lines: [Substring] = []
        var start = text.utf8.startIndex
        for i in text.utf8.indices where text.utf8[i] == UInt8(ascii: "\n") {
            let next = text.utf8.index(after: i)
            lines.append(text[start..<next])
            start = next
        }
        if start != text.utf8.endIndex { lines.append(text[start...]) }
        return lines
    }
}

extension String {
    var trimmingTrailingSpaces: String {
        var s = Substring(self)
        while let last = s.last, last == " " || last == "\t" || last == "\r" { s = s.dropLast() }
        return String(s)
    }
}
