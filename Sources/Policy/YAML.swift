import CYaml

/// A position in a source file, 1-based, as diagnostics print it.
public struct SourceMark: Sendable, Hashable, Comparable {
    public let line: Int
    public let column: Int

    public init(line: Int, column: Int) {
        self.line = line
        self.column = column
    }

    /// The file as a whole (it cannot be read, or is too large): its first line and column, so
    /// that every diagnostic keeps its `file:line:col`.
    public static let wholeFile = SourceMark(line: 1, column: 1)

    public static func < (a: SourceMark, b: SourceMark) -> Bool {
        (a.line, a.column) < (b.line, b.column)
    }
}

/// A YAML node with its position: the policy parser needs `file:line:col` for every value.
public indirect enum YAMLNode: Sendable {
    case scalar(String, SourceMark, plain: Bool)
    case sequence([YAMLNode], SourceMark)
    case mapping([(key: YAMLNode, value: YAMLNode)], SourceMark)

    public var mark: SourceMark {
        switch self {
        case .scalar(_, let m, _), .sequence(_, let m), .mapping(_, let m): m
        }
    }

    public var scalar: String? {
        if case .scalar(let s, _, _) = self { return s }
        return nil
    }

    /// What a diagnostic calls it: "a mapping", "a list", "'text'".
    public var kindName: String {
        switch self {
        case .scalar(let s, _, _): s.isEmpty ? "an empty value" : "'\(s)'"
        case .sequence: "a list"
        case .mapping: "a mapping"
        }
    }
}

public struct YAMLError: Error, Sendable {
    public let mark: SourceMark
    public let message: String
}

extension String {
    /// " (byte 0x00)": the offending value libyaml reports for a reader error.
    fileprivate init(offendingValue value: Int32) {
        let digits = String(value, radix: 16, uppercase: true)
        self = " (\(value > 0xFF ? "character U+" : "byte 0x")\(digits.count % 2 == 1 ? "0" : "")\(digits))"
    }
}

/// Parses YAML with libyaml's event API into `YAMLNode`s. Strict on purpose: one document,
/// no anchors or aliases (no billion laughs), no duplicate keys, bounded size and depth.
public enum YAMLReader {
    public static let maximumBytes = 1 << 20
    public static let maximumDepth = 64

    public static func parse(_ bytes: [UInt8]) throws(YAMLError) -> YAMLNode? {
        if bytes.count > maximumBytes {
            throw YAMLError(mark: SourceMark(line: 1, column: 1),
                            message: "the file is \(bytes.count) bytes; a policy may have at most \(maximumBytes)")
        }
        let parser = UnsafeMutablePointer<yaml_parser_t>.allocate(capacity: 1)
        let event = UnsafeMutablePointer<yaml_event_t>.allocate(capacity: 1)
        defer {
            parser.deallocate()
            event.deallocate()
        }
        guard yaml_parser_initialize(parser) == 1 else {
            throw YAMLError(mark: SourceMark(line: 1, column: 1), message: "libyaml could not start")
        }
        defer { yaml_parser_delete(parser) }

        return try bytes.withUnsafeBufferPointer { (buffer) throws(YAMLError) -> YAMLNode? in
            yaml_parser_set_input_string(parser, buffer.baseAddress, buffer.count)
            var builder = TreeBuilder()
            while true {
                guard yaml_parser_parse(parser, event) == 1 else {
                    let p = parser.pointee
                    let problem = p.problem.map { String(cString: $0) } ?? "malformed YAML"
                    let context = p.context.map { String(cString: $0) + ": " } ?? ""
                    if p.error == YAML_READER_ERROR {
                        // Bad bytes (a NUL, invalid UTF-8): libyaml gives a byte offset, not a mark.
                        let offset = min(Int(p.problem_offset), buffer.count)
                        let byte = p.problem_value >= 0 ? String(offendingValue: p.problem_value) : ""
                        throw YAMLError(mark: mark(atOffset: offset, in: buffer), message: "YAML: \(problem)\(byte)")
                    }
                    throw YAMLError(mark: SourceMark(line: Int(p.problem_mark.line) + 1, column: Int(p.problem_mark.column) + 1),
                                    message: "YAML: \(context)\(problem)")
                }
                defer { yaml_event_delete(event) }
                let e = event.pointee
                let mark = SourceMark(line: Int(e.start_mark.line) + 1, column: Int(e.start_mark.column) + 1)
                switch e.type {
                case YAML_STREAM_END_EVENT:
                    return builder.root
                case YAML_DOCUMENT_START_EVENT:
                    builder.documents += 1
                    if builder.documents > 1 {
                        throw YAMLError(mark: mark, message: "a policy file holds one YAML document")
                    }
                case YAML_ALIAS_EVENT:
                    throw YAMLError(mark: mark, message: "YAML aliases are not allowed in a policy")
                case YAML_SCALAR_EVENT:
                    if e.data.scalar.anchor != nil { throw anchorError(mark) }
                    let value = String(decoding: UnsafeBufferPointer(start: e.data.scalar.value, count: e.data.scalar.length),
                                       as: UTF8.self)
                    try builder.add(.scalar(value, mark, plain: e.data.scalar.style == YAML_PLAIN_SCALAR_STYLE))
                case YAML_SEQUENCE_START_EVENT:
                    if e.data.sequence_start.anchor != nil { throw anchorError(mark) }
                    try builder.open(mapping: false, mark)
                case YAML_MAPPING_START_EVENT:
                    if e.data.mapping_start.anchor != nil { throw anchorError(mark) }
                    try builder.open(mapping: true, mark)
                case YAML_SEQUENCE_END_EVENT, YAML_MAPPING_END_EVENT:
                    try builder.close()
                default:
                    break
                }
            }
        }
    }

    /// The line and column (in bytes) of a byte offset.
    private static func mark(atOffset offset: Int, in bytes: UnsafeBufferPointer<UInt8>) -> SourceMark {
        var line = 1, lineStart = 0
        for i in 0..<offset where bytes[i] == 0x0A {
            line += 1
            lineStart = i + 1
        }
        return SourceMark(line: line, column: offset - lineStart + 1)
    }

    private static func anchorError(_ mark: SourceMark) -> YAMLError {
        YAMLError(mark: mark, message: "YAML anchors are not allowed in a policy (write the value out, or use a group)")
    }

    /// Builds the tree from events with an explicit stack: no recursion, so no depth can overflow
    /// it. Each open collection is a frame mutated in place, so a list of n items costs O(n), and
    /// a mapping's keys are kept in a dictionary, so the duplicate-key check costs O(1) per key.
    private struct TreeBuilder {
        struct Frame {
            let isMapping: Bool
            let mark: SourceMark
            var items: [YAMLNode] = []
            var pairs: [(key: YAMLNode, value: YAMLNode)] = []
            var pendingKey: YAMLNode?
            var keys: [String: SourceMark] = [:]

            var node: YAMLNode { isMapping ? .mapping(pairs, mark) : .sequence(items, mark) }
        }

        var stack: [Frame] = []
        var root: YAMLNode?
        var documents = 0

        mutating func open(mapping: Bool, _ mark: SourceMark) throws(YAMLError) {
            if stack.count >= YAMLReader.maximumDepth {
                throw YAMLError(mark: mark, message: "nested deeper than \(YAMLReader.maximumDepth) levels")
            }
            stack.append(Frame(isMapping: mapping, mark: mark))
        }

        mutating func close() throws(YAMLError) {
            guard let frame = stack.popLast() else { return }
            try add(frame.node)
        }

        mutating func add(_ node: YAMLNode) throws(YAMLError) {
            let top = stack.count - 1
            guard top >= 0 else {
                root = node
                return
            }
            guard stack[top].isMapping else {
                stack[top].items.append(node)
                return
            }
            if let key = stack[top].pendingKey {
                stack[top].pairs.append((key, node))
                stack[top].pendingKey = nil
                return
            }
            guard let name = node.scalar else {
                throw YAMLError(mark: node.mark, message: "a mapping key must be a plain name, not \(node.kindName)")
            }
            if let first = stack[top].keys[name] {
                throw YAMLError(mark: node.mark, message: "duplicate key '\(name)' (first at line \(first.line), column \(first.column))")
            }
            stack[top].keys[name] = node.mark
            stack[top].pendingKey = node
        }
    }
}
