import X86

/// A set of instruction encodings: every field given must match, a list matches any of its
/// values. Form fields (mnemonic, form, opcode, extension, group, class, encoding) select whole
/// forms; instance fields (operands, operand-size, vector-length, register, prefix) select the
/// concrete encodings of a form that carry them.
public struct Selector: Sendable, Hashable {
    public var mnemonics: Set<String>?
    public var forms: Set<String>?
    public var opcodes: Set<String>?
    public var extensions: Set<String>?
    public var groups: [String]?
    public var classes: Set<String>?
    public var encodings: Set<String>?

    public var operands: Set<OperandChoice>?
    public var operandSizes: Set<Int>?
    public var vectorLengths: Set<Int>?
    public var registers: Set<String>?
    public var prefixes: Set<PrefixChoice>?

    public private(set) var mark: SourceMark
    /// A `trust` entry: an extension group admits only forms whose every extension is trusted.
    public var trusting = false

    public init(mark: SourceMark) { self.mark = mark }

    public enum OperandChoice: String, Sendable, CaseIterable { case memory, register }

    public enum PrefixChoice: String, Sendable, CaseIterable {
        case lock, rep, repne, rex
        case rexW = "rex.w"
        case operandSize = "66"
        case addressSize = "67"
        case cs, ds, es, ss, fs, gs
        case redundant
    }

    /// The selector in a stable order (field by field, values sorted): for content hashes.
    public var canonicalDescription: String {
        func field<T>(_ name: String, _ values: Set<T>?, _ text: (T) -> String) -> String? {
            values.map { "\(name)=" + $0.map(text).sorted().joined(separator: ",") }
        }
        return [
            field("mnemonic", mnemonics) { $0 }, field("form", forms) { $0 }, field("opcode", opcodes) { $0 },
            field("extension", extensions) { $0 }, groups.map { "group=" + $0.joined(separator: ",") },
            field("class", classes) { $0 }, field("encoding", encodings) { $0 },
            field("operands", operands) { $0.rawValue }, field("operand-size", operandSizes) { String($0) },
            field("vector-length", vectorLengths) { String($0) }, field("register", registers) { $0 },
            field("prefix", prefixes) { $0.rawValue }, trusting ? "trusting" : nil,
        ].compactMap { $0 }.joined(separator: " ")
    }

    /// The selector without its position: rules whose keys are equal select the same encodings.
    var matchKey: Selector {
        var key = self
        key.mark = SourceMark(line: 0, column: 0)
        return key
    }

    public var hasInstanceFields: Bool {
        operands != nil || operandSizes != nil || vectorLengths != nil || registers != nil || prefixes != nil
    }

    /// Whether the form's own fields match (instance fields are not looked at here).
    func matchesForm(_ form: Form, groups: GroupCatalog, checkingGroups: Bool = true) -> Bool {
        if let m = mnemonics, !m.contains(form.mnemonic) { return false }
        if let f = forms, !f.contains(form.id) { return false }
        if let o = opcodes, !o.contains(OpcodeString.normalized(form.opcodeString)) { return false }
        if let e = extensions, e.isDisjoint(with: form.cpuid) { return false }
        if let c = classes, !c.contains(where: { FormClassNames.has(form, $0) }) { return false }
        if let e = encodings, !e.contains(form.encoding.rawValue) { return false }
        if checkingGroups, let g = self.groups, !g.contains(where: { groups.mayContain(form, group: $0, trusting: trusting) }) {
            return false
        }
        // Instance fields that a form can never satisfy exclude it already.
        if let sizes = vectorLengths, !sizes.contains(where: { Self.vectorLength(form) == $0 }) { return false }
        if let choices = operands, !choices.contains(where: { Self.formAllows(form, $0) }) { return false }
        if let names = registers, !names.contains(where: { Self.formMayName(form, $0) }) { return false }
        return true
    }

    /// Whether some encoding of the form can name the register (an operand of its register
    /// file, or an implicit use).
    static func formMayName(_ form: Form, _ register: String) -> Bool {
        if form.implicitRegisters.contains(where: { $0.register == register }) { return true }
        guard let file = RegisterNames.file[register] else { return false }
        return form.operands.contains { operand in
            operand.kind.registerClass == file && (operand.kind.location != .fixedRegister || operand.kind.name == register)
        }
    }

    /// Whether a decoded instance of a form that `matchesForm` is selected.
    func matchesInstance(_ insn: Instruction, _ form: Form, decoder: Decoder, groups: GroupCatalog) -> Bool {
        if let g = self.groups, !g.contains(where: { groups.contains(insn, form, group: $0, decoder: decoder) }) { return false }
        if let choices = operands {
            let memory = insn.hasMemoryModRM || form.operands.contains { $0.kind.location == .memory || $0.kind.location == .vsib }
            if !choices.contains(memory ? .memory : .register) { return false }
        }
        if let sizes = operandSizes {
            guard let size = decoder.operandSize(of: insn), sizes.contains(size) else { return false }
        }
        if let names = registers, names.isDisjoint(with: decoder.registers(of: insn)) { return false }
        if let wanted = prefixes, !wanted.contains(where: { Self.carries(insn, $0) }) { return false }
        return true
    }

    /// The form's vector length in bits, from its L (legacy SSE: from its widest register).
    static func vectorLength(_ form: Form) -> Int? {
        if let l = form.l { return 128 << l }
        let files = form.operands.map(\.kind.registerClass)
        if files.contains(.zmm) { return 512 }
        if files.contains(.ymm) { return 256 }
        if files.contains(.xmm) { return form.encoding == .legacy || form.l != nil ? 128 : nil }
        return nil
    }

    static func formAllows(_ form: Form, _ choice: OperandChoice) -> Bool {
        let locations = form.operands.map(\.kind.location)
        switch choice {
        case .memory: return locations.contains { [.memory, .vsib, .sibMemory, .modrmRegisterOrMemory].contains($0) }
        case .register: return !locations.contains { [.memory, .vsib, .sibMemory].contains($0) }
        }
    }

    static func carries(_ insn: Instruction, _ prefix: PrefixChoice) -> Bool {
        let p = insn.prefixes
        switch prefix {
        case .lock: return p.contains(.lock)
        case .rep: return p.contains(.rep)
        case .repne: return p.contains(.repne)
        case .rex: return p.contains(.rex)
        case .rexW: return insn.rexW
        case .operandSize: return p.contains(.operandSize)
        case .addressSize: return p.contains(.addressSize)
        case .cs: return p.contains(.segmentCS)
        case .ds: return p.contains(.segmentDS)
        case .es: return p.contains(.segmentES)
        case .ss: return p.contains(.segmentSS)
        case .fs: return p.contains(.segmentFS)
        case .gs: return p.contains(.segmentGS)
        case .redundant: return insn.hasRedundantPrefix
        }
    }
}

/// Op-code strings as the database lists them, compared with spacing and case normalised.
public enum OpcodeString {
    public static func normalized(_ text: String) -> String {
        text.split(whereSeparator: { $0 == " " || $0 == "\t" }).map { $0.uppercased() }.joined(separator: " ")
    }
}

/// The `class` selector's vocabulary.
public enum FormClassNames {
    public static let all: [(name: String, about: String)] = [
        ("non-temporal", "a non-temporal (cache-bypassing) hint"), ("gather", "a VSIB gather"), ("scatter", "a VSIB scatter"),
        ("far-transfer", "far JMP, CALL, RET and IRET"), ("string", "MOVS, STOS, CMPS, SCAS, LODS, INS, OUTS"),
        ("privileged", "CPL0 only"), ("lockable", "takes a LOCK prefix"), ("stack", "pushes or pops"),
        ("repeatable", "takes REP/REPNE"), ("segment-load", "loads a segment register"), ("io", "port I/O"),
        ("vsib", "a vector-indexed memory operand"), ("serializing", "serializes the pipeline"),
        ("jmp", "direct jump"), ("jcc", "conditional jump"), ("ijmp", "indirect jump"), ("call", "direct call"),
        ("icall", "indirect call"), ("ret", "return"), ("int", "software interrupt"), ("xbegin", "transaction begin, abort or end"),
        ("exception", "raises an exception (UD0-2, INT3...)"), ("branch", "any control transfer"),
    ]

    public static func has(_ form: Form, _ name: String) -> Bool {
        switch name {
        case "non-temporal": return form.classes.contains(.nonTemporal)
        case "gather": return form.classes.contains(.gather)
        case "scatter": return form.classes.contains(.scatter)
        case "far-transfer": return form.classes.contains(.far)
        case "string": return form.classes.contains(.string)
        case "privileged": return form.classes.contains(.privileged)
        case "lockable": return form.classes.contains(.lockable)
        case "stack": return form.classes.contains(.stack)
        case "repeatable": return form.classes.contains(.repeatable) || form.classes.contains(.repne)
        case "segment-load": return form.classes.contains(.segmentLoad)
        case "io": return form.classes.contains(.io)
        case "vsib": return form.classes.contains(.vsib)
        case "serializing": return form.classes.contains(.serializing)
        case "branch": return form.flow != nil && form.flow != .exception
        default: return form.flow?.rawValue == name
        }
    }
}

/// Every register name a policy may write, with its register file.
public enum RegisterNames {
    public static let file: [String: OperandKind.RegisterClass] = {
        var out: [String: OperandKind.RegisterClass] = [:]
        let files: [(OperandKind.RegisterClass, Int)] = [(.gpr8, 16), (.gpr16, 16), (.gpr32, 16), (.gpr64, 16), (.mmx, 8),
            (.xmm, 32), (.ymm, 32), (.zmm, 32), (.opmask, 8), (.tile, 8), (.x87, 8), (.segment, 6), (.control, 16), (.debug, 16)]
        for (registerFile, count) in files {
            for n in 0..<count {
                if let name = Decoder.name(registerFile, n, anyREX: true) { out[name] = registerFile }
                if let name = Decoder.name(registerFile, n, anyREX: false) { out[name] = registerFile }
            }
        }
        return out
    }()

    /// Registers only ever used implicitly.
    public static let implicitOnly = ["rip", "rflags", "eflags", "mxcsr"]
    public static let all: [String] = file.keys.sorted() + implicitOnly
}
