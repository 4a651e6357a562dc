/// Edits of a policy file as text, so that the user's comments, order and formatting stay as
/// they were: `sieve ban` appends one item to the top-level `ban:` list (or adds the list).
/// libyaml gives the positions; the new text follows the file's own indentation.
public enum PolicyEdit {
    public struct Failure: Error, CustomStringConvertible, Sendable {
        public let description: String
    }

    /// The source with a ban of `selector` (YAML key → value text, in order) appended.
    public static func appendingBan(to source: String, selector: [(key: String, value: String)], reason: String,
                                    refs: [String]) throws -> String {
        let bytes = Array(source.utf8)
        let root: YAMLNode?
        do { root = try YAMLReader.parse(bytes) } catch {
            throw Failure(description: "\(error.mark.line):\(error.mark.column): \(error.message)")
        }
        guard case .mapping(let entries, _)? = root else { throw Failure(description: "the policy is not a YAML mapping") }
        var lines = source.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        if lines.last == "" { lines.removeLast() }

        guard let index = entries.firstIndex(where: { $0.key.scalar == "ban" }) else {
            // No ban list yet: add one at the end, in the usual two-space style.
            lines += ["ban:"] + item(indent: "  ", selector, reason, refs)
            return lines.joined(separator: "\n") + "\n"
        }
        guard case .sequence(let items, let mark) = entries[index].value else {
            throw Failure(description: "\(entries[index].value.mark.line):\(entries[index].value.mark.column): 'ban' is not a list")
        }
        let first = lines[mark.line - 1]
        let dashColumn = first.index(first.startIndex, offsetBy: mark.column - 1)
        if first[dashColumn...].hasPrefix("[") {
            guard items.isEmpty else {
                throw Failure(description: "\(mark.line):\(mark.column): 'ban' is a flow list; write it as a block list to use sieve ban")
            }
            // `ban: []`: the empty list becomes a block list.
            lines[mark.line - 1] = String(first[..<dashColumn]).trimmingTrailingSpaces
            lines.insert(contentsOf: item(indent: "  ", selector, reason, refs), at: mark.line)
            return lines.joined(separator: "\n") + "\n"
        }
        let indent = String(repeating: " ", count: mark.column - 1)
        // The list ends before the next top-level key (or the end of the file); comments and
        // blank lines just before that key belong to it.
        var end = index + 1 < entries.count ? entries[index + 1].key.mark.line - 1 : lines.count
        while end > mark.line && (lines[end - 1].trimmingTrailingSpaces.isEmpty || lines[end - 1].drop { $0 == " " }.hasPrefix("#")) {
            end -= 1
        }
        lines.insert(contentsOf: item(indent: indent, selector, reason, refs), at: end)
        return lines.joined(separator: "\n") + "\n"
    }

    static func item(indent: String, _ selector: [(key: String, value: String)], _ reason: String, _ refs: [String]) -> [String] {
        var out: [String] = []
        for (k, field) in selector.enumerated() {
            out.append(indent + (k == 0 ? "- " : "  ") + "\(field.key): \(field.value)")
        }
        out.append(indent + "  reason: " + quoted(reason))
        if !refs.isEmpty { out.append(indent + "  refs: [" + refs.map(quoted).joined(separator: ", ") + "]") }
        return out
    }

    /// A double-quoted YAML scalar.
    static func quoted(_ text: String) -> String {
        var out = "\""
        for ch in text.unicodeScalars {
            switch ch {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\t": out += "\\t"
            default: out.unicodeScalars.append(ch)
            }
        }
        return out + "\""
    }

    /// A selector written `key=value` on a command line, as YAML: a list for comma-separated values.
    public static func selectorField(_ token: String) -> (key: String, value: String) {
        guard let eq = token.firstIndex(of: "=") else { return ("mnemonic", token) }
        let key = String(token[..<eq]), value = String(token[token.index(after: eq)...])
        let parts = value.split(separator: ",").map { String($0).trimmingTrailingSpaces }
        return (key, parts.count > 1 ? "[" + parts.joined(separator: ", ") + "]" : value)
    }

    /// A unified-style listing of the lines `edited` adds to `original` (the edit only inserts).
    public static func diff(_ original: String, _ edited: String, path: String) -> String {
        let a = original.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        let b = edited.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        var start = 0
        while start < a.count && start < b.count && a[start] == b[start] { start += 1 }
        var tailA = a.count, tailB = b.count
        while tailA > start && tailB > start && a[tailA - 1] == b[tailB - 1] { tailA -= 1; tailB -= 1 }
        var out = "--- \(path)\n+++ \(path)\n@@ -\(start + 1),\(tailA - start) +\(start + 1),\(tailB - start) @@\n"
        for line in a[max(0, start - 3)..<start] { out += " \(line)\n" }
        for line in a[start..<tailA] { out += "-\(line)\n" }
        for line in b[start..<tailB] { out += "+\(line)\n" }
        for line in a[tailA..<min(a.count, tailA + 3)] { out += " \(line)\n" }
        return out
    }
}

extension String {
    var trimmingTrailingSpaces: String {
        var s = Substring(self)
        while let last = s.last, last == " " || last == "\t" || last == "\r" { s = s.dropLast() }
        return String(s)
    }
}
