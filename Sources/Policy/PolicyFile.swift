import X86

/// One policy file as written: schema version 1 (DESIGN §7), every value with its position.
public struct PolicyFile: Sendable {
    public let path: String
    public let source: [UInt8]
    public var name = ""
    public var description: String?
    public var extends: (path: String, mark: SourceMark)?
    public var sandbox = SandboxSettings()
    public var trust: [Rule] = []
    public var allow: [Rule] = []
    public var ban: [Rule] = []
    public var rewrites: [RewriteRule] = []
    public var groups: [(name: String, mark: SourceMark, selectors: [Selector])] = []
}

public struct SandboxSettings: Sendable, Equatable {
    public enum Model: String, Sendable, CaseIterable {
        case naclX86_64 = "nacl-x86-64"
        case none
    }

    public enum Enforcement: String, Sendable, CaseIterable { case refuse, warn }

    public var model: Model?
    public var bundleSize: Int?
    /// NaCl's rule that a call ends at a bundle end (NaCl made it a warning).
    public var callAlignment: Enforcement?

    /// `child` key by key over `self`.
    func overridden(by child: SandboxSettings) -> SandboxSettings {
        SandboxSettings(model: child.model ?? model, bundleSize: child.bundleSize ?? bundleSize,
                        callAlignment: child.callAlignment ?? callAlignment)
    }
}

/// A `trust`, `allow` or `ban` entry: a selector and what it decides, with its justification.
public struct Rule: Sendable {
    public enum Effect: String, Sendable { case trust, allow, ban }

    public let effect: Effect
    public let selector: Selector
    public let reason: String?
    public let refs: [String]
    public let file: String
    public let mark: SourceMark

    public var accepts: Bool { effect != .ban }
    public var location: String { "\(file):\(mark.line)" }
}

/// A `rewrite` entry: what `sieve patch` puts in place of the instructions a selector names when
/// the policy refuses them (DESIGN §9): `nop` (NOPs of the same length) or an instruction form
/// (a form id or mnemonic) with the same operands, re-encoded under its opcode and padded with NOPs.
public struct RewriteRule: Sendable {
    public let selector: Selector
    /// `nop`, or a form id or mnemonic of the database.
    public let to: String
    public let reason: String
    public let refs: [String]
    public let file: String
    public let mark: SourceMark

    public var location: String { "\(file):\(mark.line)" }
}

/// Reads a policy file's YAML into a `PolicyFile`, collecting every problem it finds.
struct PolicyFileReader {
    let path: String
    let database: ISADatabase
    var diagnostics: [Diagnostic] = []
    var hints = HintBudget()

    static let topKeys = ["sieve", "name", "description", "extends", "sandbox", "trust", "allow", "ban", "rewrite", "groups"]
    static let sandboxKeys = ["model", "bundle-size", "call-alignment"]
    static let ruleKeys = ["reason", "refs"]
    /// Selector keys that name whole forms, and those that select some instances of a form.
    static let formKeys = ["mnemonic", "form", "opcode", "extension", "group", "class", "encoding"]
    static let instanceKeys = ["operands", "operand-size", "vector-length", "register", "prefix"]
    static let selectorKeys = formKeys + instanceKeys

    mutating func error(_ mark: SourceMark, _ message: String, hint: String? = nil) {
        diagnostics.append(Diagnostic(.error, path, mark, message, hint: hint))
    }

    mutating func read(_ source: [UInt8]) -> PolicyFile? {
        var file = PolicyFile(path: path, source: source)
        let root: YAMLNode?
        do { root = try YAMLReader.parse(source) } catch {
            self.error(error.mark, error.message)
            return nil
        }
        guard case .mapping(let pairs, _)? = root else {
            error(root?.mark ?? SourceMark(line: 1, column: 1), "a policy is a YAML mapping (sieve: 1, name: ..., trust: [...])",
                  hint: "start from policies/standard.yaml")
            return nil
        }
        var seen: Set<String> = []
        for (key, value) in pairs {
            let name = key.scalar ?? ""
            seen.insert(name)
            switch name {
            case "sieve":
                if value.scalar != "1" {
                    error(value.mark, "unsupported schema version \(value.kindName)", hint: "this Sieve reads `sieve: 1`")
                }
            case "name": file.name = scalar(value, "name") ?? ""
            case "description": file.description = scalar(value, "description")
            case "extends":
                if let target = scalar(value, "extends") { file.extends = (target, value.mark) }
            case "sandbox": file.sandbox = sandbox(value)
            case "trust": file.trust = trust(value)
            case "allow": file.allow = rules(value, .allow)
            case "ban": file.ban = rules(value, .ban)
            case "rewrite": file.rewrites = rewrites(value)
            case "groups": file.groups = groups(value)
            default:
                error(key.mark, "unknown key '\(name)'", hint: hint(name, Self.topKeys))
            }
        }
        if !seen.contains("sieve") { error(SourceMark(line: 1, column: 1), "missing 'sieve: 1' (the schema version)") }
        if !seen.contains("name") { error(SourceMark(line: 1, column: 1), "missing 'name'") }
        return file
    }

    private mutating func hint<Candidates: Sequence<String>>(_ word: String, _ candidates: @autoclosure () -> Candidates) -> String? {
        hints.closest(to: word, in: candidates()).map { "did you mean '\($0)'?" }
    }

    private mutating func scalar(_ node: YAMLNode, _ what: String) -> String? {
        guard let value = node.scalar, !value.isEmpty else {
            error(node.mark, "'\(what)' takes a text value, not \(node.kindName)")
            return nil
        }
        return value
    }

    private mutating func sandbox(_ node: YAMLNode) -> SandboxSettings {
        var settings = SandboxSettings()
        guard case .mapping(let pairs, _) = node else {
            error(node.mark, "'sandbox' is a mapping (model: nacl-x86-64, bundle-size: 32), not \(node.kindName)")
            return settings
        }
        for (key, value) in pairs {
            let name = key.scalar ?? ""
            switch name {
            case "model":
                guard let text = scalar(value, "model") else { continue }
                settings.model = SandboxSettings.Model(rawValue: text)
                if settings.model == nil {
                    error(value.mark, "unknown sandbox model '\(text)'",
                          hint: hint(text, SandboxSettings.Model.allCases.map(\.rawValue)) ?? "models: nacl-x86-64, none")
                }
            case "bundle-size":
                guard let text = value.scalar, let size = Int(text), [16, 32, 64, 128].contains(size) else {
                    error(value.mark, "bundle-size is 16, 32, 64 or 128 bytes, not \(value.kindName)")
                    continue
                }
                settings.bundleSize = size
            case "call-alignment":
                guard let text = scalar(value, "call-alignment") else { continue }
                settings.callAlignment = SandboxSettings.Enforcement(rawValue: text)
                if settings.callAlignment == nil { error(value.mark, "call-alignment is 'refuse' or 'warn', not '\(text)'") }
            default:
                error(key.mark, "unknown sandbox key '\(name)'", hint: hint(name, Self.sandboxKeys))
            }
        }
        return settings
    }

    /// `trust:` lists group names, or mappings `{group: NAME, reason: ...}` for sensitive groups.
    private mutating func trust(_ node: YAMLNode) -> [Rule] {
        guard case .sequence(let items, _) = node else {
            error(node.mark, "'trust' is a list of group names, not \(node.kindName)")
            return []
        }
        var out: [Rule] = []
        for item in items {
            var selector = Selector(mark: item.mark)
            selector.trusting = true
            var reason: String?, refs: [String] = []
            switch item {
            case .scalar(let name, _, _):
                selector.groups = [name]
            case .mapping(let pairs, _):
                for (key, value) in pairs {
                    switch key.scalar ?? "" {
                    case "group": selector.groups = scalar(value, "group").map { [$0] }
                    case "reason": reason = scalar(value, "reason")
                    case "refs": refs = strings(value, "refs")
                    default: error(key.mark, "unknown key '\(key.scalar ?? "")' in a trust entry", hint: "a trust entry has group, reason, refs")
                    }
                }
                if selector.groups == nil { error(item.mark, "a trust entry needs 'group'") }
            case .sequence:
                error(item.mark, "a trust entry is a group name or {group: ..., reason: ...}, not a list")
                continue
            }
            guard let name = selector.groups?.first else { continue }
            checkGroupName(name, item.mark)
            out.append(Rule(effect: .trust, selector: selector, reason: reason, refs: refs, file: path, mark: item.mark))
        }
        return out
    }

    private mutating func rules(_ node: YAMLNode, _ effect: Rule.Effect) -> [Rule] {
        guard case .sequence(let items, _) = node else {
            error(node.mark, "'\(effect.rawValue)' is a list of selectors ({mnemonic: clflush, reason: ...}), not \(node.kindName)")
            return []
        }
        var out: [Rule] = []
        for item in items {
            guard case .mapping(let pairs, _) = item else {
                error(item.mark, "a selector is a mapping such as {mnemonic: clflush}, not \(item.kindName)")
                continue
            }
            var reason: String?, refs: [String] = []
            var selectorPairs: [(key: YAMLNode, value: YAMLNode)] = []
            for pair in pairs {
                switch pair.key.scalar ?? "" {
                case "reason": reason = scalar(pair.value, "reason")
                case "refs": refs = strings(pair.value, "refs")
                default: selectorPairs.append(pair)
                }
            }
            if let selector = selector(selectorPairs, at: item.mark) {
                out.append(Rule(effect: effect, selector: selector, reason: reason, refs: refs, file: path, mark: item.mark))
            }
        }
        return out
    }

    /// `rewrite:` lists selectors with `to` (nop, a form id or a mnemonic) and a reason.
    private mutating func rewrites(_ node: YAMLNode) -> [RewriteRule] {
        guard case .sequence(let items, _) = node else {
            error(node.mark, "'rewrite' is a list ({mnemonic: clflush, to: nop, reason: ...}), not \(node.kindName)")
            return []
        }
        var out: [RewriteRule] = []
        for item in items {
            guard case .mapping(let pairs, _) = item else {
                error(item.mark, "a rewrite is a mapping such as {mnemonic: clflush, to: nop, reason: ...}, not \(item.kindName)")
                continue
            }
            var to: String?, reason: String?, refs: [String] = []
            var selectorPairs: [(key: YAMLNode, value: YAMLNode)] = []
            for pair in pairs {
                switch pair.key.scalar ?? "" {
                case "to":
                    to = scalar(pair.value, "to")
                    if let name = to, name != "nop", database[name] == nil, !database.forms.contains(where: { $0.mnemonic == name }) {
                        let names = ["nop"] + database.forms.map(\.mnemonic)
                        let suggestion = hint(name, names)
                        error(pair.value.mark, "'to' is nop, a form id or a mnemonic, not '\(name)'", hint: suggestion)
                        to = nil
                    }
                case "reason": reason = scalar(pair.value, "reason")
                case "refs": refs = strings(pair.value, "refs")
                default: selectorPairs.append(pair)
                }
            }
            if to == nil, !pairs.contains(where: { $0.key.scalar == "to" }) { error(item.mark, "a rewrite needs 'to' (nop, a form id or a mnemonic)") }
            if reason == nil { error(item.mark, "a rewrite needs a 'reason': it changes what the code does") }
            for pair in selectorPairs where Self.instanceKeys.contains(pair.key.scalar ?? "") {
                error(pair.key.mark, "a rewrite names whole forms: '\(pair.key.scalar ?? "")' selects some instances of a form",
                      hint: "select by " + Self.formKeys.joined(separator: ", "))
            }
            if let selector = selector(selectorPairs, at: item.mark), let to, let reason {
                out.append(RewriteRule(selector: selector, to: to, reason: reason, refs: refs, file: path, mark: item.mark))
            }
        }
        return out
    }

    private mutating func groups(_ node: YAMLNode) -> [(String, SourceMark, [Selector])] {
        guard case .mapping(let pairs, _) = node else {
            error(node.mark, "'groups' maps names to lists of selectors, not \(node.kindName)")
            return []
        }
        var out: [(String, SourceMark, [Selector])] = []
        for (key, value) in pairs {
            let name = key.scalar ?? ""
            if GroupCatalog.builtinByName[name] != nil {
                error(key.mark, "'\(name)' is a built-in group; choose another name")
            }
            guard case .sequence(let items, _) = value else {
                error(value.mark, "group '\(name)' is a list of selectors, not \(value.kindName)")
                continue
            }
            var selectors: [Selector] = []
            for item in items {
                guard case .mapping(let fields, _) = item else {
                    error(item.mark, "a selector is a mapping such as {mnemonic: rdtsc}, not \(item.kindName)")
                    continue
                }
                if let s = selector(fields, at: item.mark) { selectors.append(s) }
            }
            out.append((name, key.mark, selectors))
        }
        return out
    }

    private mutating func strings(_ node: YAMLNode, _ what: String) -> [String] {
        switch node {
        case .scalar(let s, _, _): return [s]
        case .sequence(let items, _):
            return items.compactMap { item in
                guard let s = item.scalar else {
                    error(item.mark, "'\(what)' lists text values, not \(item.kindName)")
                    return nil
                }
                return s
            }
        case .mapping:
            error(node.mark, "'\(what)' is a value or a list of values, not a mapping")
            return []
        }
    }

    // MARK: - Selectors

    private mutating func selector(_ pairs: [(key: YAMLNode, value: YAMLNode)], at mark: SourceMark) -> Selector? {
        var s = Selector(mark: mark)
        if pairs.isEmpty {
            error(mark, "an empty selector would match every instruction", hint: "name a mnemonic, form, extension, group or class")
            return nil
        }
        let errorsBefore = diagnostics.count
        for (key, value) in pairs {
            let field = key.scalar ?? ""
            let values = strings(value, field).map { $0.lowercased() }
            let marks = Self.marks(value)
            switch field {
            case "mnemonic":
                s.mnemonics = Set(values.flatMap { resolveMnemonic($0, marks[$0] ?? value.mark) })
            case "form":
                for v in values where database[v] == nil {
                    let db = database
                    error(marks[v] ?? value.mark, "unknown form '\(v)'", hint: hint(v, Self.formIDs(db)))
                }
                s.forms = Set(values)
            case "opcode":
                let known = Vocabulary.opcodes(database)
                let wanted = strings(value, field).map(OpcodeString.normalized)
                for v in wanted where !known.contains(v) {
                    error(value.mark, "no form has the op-code string '\(v)'",
                          hint: hint(v, known) ?? "see `sieve isa MNEMONIC` for op-code strings")
                }
                s.opcodes = Set(wanted)
            case "extension":
                let names = values.map(GroupCatalog.extensionName)
                let known = Vocabulary.extensions(database)
                for (v, n) in zip(values, names) where !known.contains(n) {
                    error(marks[v] ?? value.mark, "unknown extension '\(v)'", hint: hint(n, known))
                }
                s.extensions = Set(names)
            case "group":
                for v in values { checkGroupName(v, marks[v] ?? value.mark) }
                s.groups = values
            case "class":
                let known = FormClassNames.all.map(\.name)
                for v in values where !known.contains(v) {
                    error(marks[v] ?? value.mark, "unknown class '\(v)'", hint: hint(v, known))
                }
                s.classes = Set(values)
            case "encoding":
                let known = Encoding.allCases.map(\.rawValue)
                for v in values where !known.contains(v) { error(marks[v] ?? value.mark, "unknown encoding '\(v)'", hint: hint(v, known)) }
                s.encodings = Set(values)
            case "operands":
                s.operands = Set(values.compactMap { v in
                    let choice = Selector.OperandChoice(rawValue: v)
                    if choice == nil { error(marks[v] ?? value.mark, "operands is 'memory' or 'register', not '\(v)'") }
                    return choice
                })
            case "operand-size":
                s.operandSizes = Set(numbers(values, value, marks, allowed: [8, 16, 32, 64, 80, 128, 256, 512], field))
            case "vector-length":
                s.vectorLengths = Set(numbers(values, value, marks, allowed: [128, 256, 512], field))
            case "register":
                for v in values where !Self.registerNames.contains(v) {
                    error(marks[v] ?? value.mark, "unknown register '\(v)'", hint: hint(v, Self.registerNames))
                }
                s.registers = Set(values)
            case "prefix":
                s.prefixes = Set(values.compactMap { v in
                    let choice = Selector.PrefixChoice(rawValue: v)
                    if choice == nil {
                        error(marks[v] ?? value.mark, "unknown prefix '\(v)'",
                              hint: hint(v, Selector.PrefixChoice.allCases.map(\.rawValue)) ?? "prefixes: lock rep repne rex rex.w 66 67 cs ds es ss fs gs redundant")
                    }
                    return choice
                })
            default:
                error(key.mark, "unknown selector field '\(field)'", hint: hint(field, Self.selectorKeys + Self.ruleKeys))
            }
        }
        return diagnostics.count == errorsBefore ? s : nil
    }

    private mutating func numbers(_ values: [String], _ node: YAMLNode, _ marks: [String: SourceMark], allowed: [Int],
                                  _ field: String) -> [Int] {
        values.compactMap { v in
            guard let n = Int(v), allowed.contains(n) else {
                error(marks[v] ?? node.mark, "\(field) is one of \(allowed.map(String.init).joined(separator: ", ")), not '\(v)'")
                return nil
            }
            return n
        }
    }

    private mutating func resolveMnemonic(_ name: String, _ mark: SourceMark) -> [String] {
        let names = Mnemonics.resolve(name, in: database)
        let db = database
        if names.isEmpty { error(mark, "unknown mnemonic '\(name)'", hint: hint(name, Self.mnemonicNames(db))) }
        return names
    }

    private mutating func checkGroupName(_ name: String, _ mark: SourceMark) {
        // User groups are checked once every file is read (a child may use its parent's groups).
        pendingGroupReferences.append((name, mark))
    }

    var pendingGroupReferences: [(String, SourceMark)] = []

    /// Where each scalar of a value stands, for errors about one value of a list.
    private static func marks(_ node: YAMLNode) -> [String: SourceMark] {
        switch node {
        case .scalar(let s, let m, _): return [s.lowercased(): m]
        case .sequence(let items, _):
            var out: [String: SourceMark] = [:]
            for case .scalar(let s, let m, _) in items where out[s.lowercased()] == nil { out[s.lowercased()] = m }
            return out
        case .mapping: return [:]
        }
    }

    static let registerNames = RegisterNames.all

    private static func formIDs(_ database: ISADatabase) -> [String] { database.forms.map(\.id) }
    private static func mnemonicNames(_ database: ISADatabase) -> [String] { Mnemonics.all(in: database) }
}

/// Mnemonics as policies write them: lower case, with the SDM's aliases.
public enum Mnemonics {
    /// Condition-code spellings, each mapped to the one iced-x86 (and the database) uses.
    static let conditionAliases: [String: String] = [
        "z": "e", "nz": "ne", "c": "b", "nae": "b", "nc": "ae", "nb": "ae", "na": "be", "nbe": "a",
        "pe": "p", "po": "np", "nge": "l", "nl": "ge", "ng": "le", "nle": "g",
    ]
    static let plainAliases: [String: String] = [
        "xlat": "xlatb", "fwait": "wait", "int1": "int1", "icebp": "int1", "retn": "ret", "lret": "retf",
        "cmpxchg16": "cmpxchg16b", "setalc": "salc",
    ]

    /// SAL is SHL (D0-D3 /4); the database also lists the undocumented /6 encoding as SAL.
    static let sameInstruction: [String: [String]] = ["sal": ["shl", "sal"], "shl": ["shl", "sal"]]

    public static func all(in database: ISADatabase) -> [String] {
        Array(Set(database.forms.map(\.mnemonic))).sorted()
    }

    /// Every database mnemonic a policy's mnemonic names (empty: unknown).
    public static func resolve(_ name: String, in database: ISADatabase) -> [String] {
        if let names = sameInstruction[name.lowercased()] { return names }
        return canonical(name, in: database).map { [$0] } ?? []
    }

    public static func canonical(_ name: String, in database: ISADatabase) -> String? {
        let known = Vocabulary.mnemonics(database)
        let name = name.lowercased()
        if known.contains(name) { return name }
        if let alias = plainAliases[name], known.contains(alias) { return alias }
        for family in ["j", "set", "cmov"] where name.hasPrefix(family) {
            if let cc = conditionAliases[String(name.dropFirst(family.count))], known.contains(family + cc) { return family + cc }
        }
        return nil
    }
}

/// The database's names, as sets: computed once for the compiled-in database.
enum Vocabulary {
    static let sharedMnemonics = Set(ISADatabase.shared.forms.map(\.mnemonic))
    static let sharedOpcodes = Set(ISADatabase.shared.forms.map { OpcodeString.normalized($0.opcodeString) })
    static let sharedExtensions = Set(ISADatabase.shared.forms.flatMap(\.cpuid))

    static func mnemonics(_ db: ISADatabase) -> Set<String> {
        db === ISADatabase.shared ? sharedMnemonics : Set(db.forms.map(\.mnemonic))
    }
    static func opcodes(_ db: ISADatabase) -> Set<String> {
        db === ISADatabase.shared ? sharedOpcodes : Set(db.forms.map { OpcodeString.normalized($0.opcodeString) })
    }
    static func extensions(_ db: ISADatabase) -> Set<String> {
        db === ISADatabase.shared ? sharedExtensions : Set(db.forms.flatMap(\.cpuid))
    }
}
