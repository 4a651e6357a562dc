import Policy
import SieveCore
import X86

/// The trusted core's tables for one compiled policy (`struct sieve_tables` in `sieve_core.h`):
/// `Verifier` hands them to the core in memory, `sieve generate` prints the same values as C. One
/// builder for both, so what is tested is what is embedded.
public struct CoreTables: Sendable {
    public let entries: [sieve_entry]
    public let patterns: [sieve_pattern]
    public let modrm: [UInt32]
    /// The fast path's, from the patterns (FastTables).
    public let fast: FastTables
    public let forms: [sieve_form]
    public let instanceRules: [sieve_instance_rule]
    public let conditional: [UInt16]
    public let ruleRegisters: [Int16]
    public let implicitRegisters: [Int16]
    /// The finding kind (`enum sieve_kind`) of each of the model's refusals.
    public let reasonKinds: [UInt8]
    /// `sieve patch`'s replacements, sorted by form.
    public let rewrites: [sieve_rewrite]
    public let bundleSize: UInt32
    public let modelNone: Bool
    public let callsMustAlign: Bool
    /// What each instance rule is, for the generated C's comments.
    public let instanceRuleNotes: [String]

    public init(_ compiled: CompiledPolicy, decoder: Decoder = .shared) {
        let tables = decoder.tableExport
        let database = decoder.database
        var memoryQuick: [Int: UInt8] = [:]
        for form in database.forms { memoryQuick[form.index] = compiled.memoryQuickFlags(form.index, tables.forms[form.index]) }
        let lists = PatternLists(tables, quick: database.forms.map { compiled.quickFlags($0.index, tables.forms[$0.index]) },
                                 memoryQuick: memoryQuick)
        entries = tables.entries.indices.map { k in
            let s = lists.starts[k], e = tables.entries[k]
            return sieve_entry(start: (UInt32(s[0]), UInt32(s[1]), UInt32(s[2])), has_modrm: e.hasModRM ? 1 : 0, mod_ignored: e.modIgnored ? 1 : 0)
        }
        patterns = lists.patterns.map { p in
            let real = p.form != PatternLists.noForm
            return sieve_pattern(allowed: p.allowed, form: p.form, imm: real ? tables.forms[Int(p.form)].immediateBytes : 0,
                                 quick: p.quick, writes: real ? compiled.plans[Int(p.form)].fastWrites : 0)
        }
        modrm = (0..<256).map { PatternLists.modrmEntry(UInt8($0)) }

        // Policy rules with instance fields, in rule order; each form lists the ones that apply to it.
        var instanceRules: [sieve_instance_rule] = [], notes: [String] = [], ruleRegisters: [Int16] = []
        var ruleSlot: [Int: Int] = [:]
        for (index, rule) in compiled.policy.rules.enumerated() where PolicyLoader.isConditional(rule.selector, compiled.policy.groups) {
            let s = rule.selector
            // Instance fields inside a user group are beyond the core's instance rules: such a rule
            // fails closed (a ban matches every instance of the forms it names, an allow none).
            let nested = (s.groups ?? []).contains { name in
                compiled.policy.groups.user[name]?.contains { PolicyLoader.isConditional($0, compiled.policy.groups) } ?? false
            }
            var operands = (s.operands?.contains(.memory) ?? false ? 1 : 0) | (s.operands?.contains(.register) ?? false ? 2 : 0)
            if nested { operands = rule.accepts ? Self.matchesNothing : 0 }
            let sizes = nested ? 0 : (s.operandSizes ?? []).reduce(0) { $0 | Self.sizeBit($1) }
            let prefixes = nested ? 0 : (s.prefixes ?? []).reduce(0) { $0 | Self.prefixBit($1) }
            let registers = nested ? [] : (s.registers ?? []).sorted().map(Self.registerID)
            ruleSlot[index] = instanceRules.count
            instanceRules.append(sieve_instance_rule(accepts: rule.accepts ? 1 : 0, rule: Int32(index), operands: UInt8(operands),
                                                     sizes: UInt8(sizes), prefixes: UInt16(prefixes),
                                                     register_start: UInt16(ruleRegisters.count), register_count: UInt8(registers.count)))
            notes.append("\(rule.location) \(rule.effect.rawValue) \(s.canonicalDescription)")
            ruleRegisters += registers.map(Int16.init)
        }

        var conditional: [UInt16] = [], implicitRegisters: [Int16] = [], forms: [sieve_form] = []
        for form in database.forms {
            let f = tables.forms[form.index], plan = compiled.plans[form.index]
            let decision = compiled.policy.accepted.decisions[form.index]
            let acceptedOutright = decision.unconditional.map { compiled.policy.rules[$0].accepts } ?? false
            let conditionalStart = conditional.count
            for index in decision.conditional { conditional.append(UInt16(ruleSlot[index]!)) }
            var operands: [UInt8] = [], fixed: [Int16] = []
            for operand in form.operands where operands.count < 4 {
                guard operand.kind.registerClass != .none, let file = Self.fileCode[operand.kind.registerClass] else { continue }
                let place: Int
                switch operand.kind.location {
                case .modrmReg: place = 1
                case .modrmRegister, .modrmRegisterOrMemory: place = 2
                case .vvvv: place = 3
                case .opcodeRegister: place = 4
                case .fixedRegister: place = 5
                case .is4, .memory, .vsib, .sibMemory, .implicitMemory, .memoryOffset, .immediate, .branch: continue
                }
                operands.append(UInt8(place | file << 3))
                fixed.append(place == 5 ? Int16(Self.registerID(operand.kind.name)) : 0)
            }
            let implicitStart = implicitRegisters.count
            let implicit = form.implicitRegisters.map { Int16(Self.registerID($0.register)) }
            implicitRegisters += implicit
            let places = f.distinctPlaces + [0, 0, 0, 0]
            operands += [0, 0, 0, 0]
            fixed += [0, 0, 0, 0]
            forms.append(sieve_form(
                imm_bytes: f.immediateBytes, moffs: f.hasMoffs ? 1 : 0, uses_vvvv: f.usesVVVV ? 1 : 0, vsib: f.vsib ? 1 : 0,
                classes: f.classes, reg_checks: f.registerChecks, distinct: f.distinct, places: (places[0], places[1], places[2], places[3]),
                prefix_use: f.prefixUse, decision: acceptedOutright ? 0 : 1, rule: plan.rule, conditional_start: UInt16(conditionalStart),
                conditional_count: UInt8(decision.conditional.count), facts: plan.facts.rawValue, forbidden: plan.forbidden,
                writes: plan.writes, implicit_memory: plan.implicitMemory ? 1 : 0,
                size_memory: UInt8(Self.sizes(form).memory), size_register: UInt8(Self.sizes(form).register),
                operands: (operands[0], operands[1], operands[2], operands[3]), fixed: (fixed[0], fixed[1], fixed[2], fixed[3]),
                implicit_start: UInt16(implicitStart), implicit_count: UInt8(implicit.count)))
        }
        self.forms = forms
        fast = FastTables(entries: entries, patterns: patterns, modrm: modrm, forms: forms)
        self.instanceRules = instanceRules
        self.instanceRuleNotes = notes
        self.conditional = conditional
        self.ruleRegisters = ruleRegisters
        self.implicitRegisters = implicitRegisters
        reasonKinds = compiled.refusals.map { UInt8(FindingKind.allCases.firstIndex(of: $0.kind)!) }
        rewrites = compiled.rewrites.map { $0.core(database) }
        bundleSize = UInt32(compiled.bundleSize)
        modelNone = compiled.model == .none
        callsMustAlign = compiled.callAlignment == .refuse
        precondition(compiled.bundleSize.nonzeroBitCount == 1 && compiled.bundleSize <= Int(SIEVE_MAX_BUNDLE), "bundle size \(compiled.bundleSize)")
        let broken = Self.invariantViolations(entries: entries, patterns: patterns, modrm: modrm, forms: forms, instanceRules: instanceRules,
                                              conditional: conditional, ruleRegisters: ruleRegisters, implicitRegisters: implicitRegisters,
                                              reasonKinds: reasonKinds, fast: fast)
        precondition(broken.isEmpty, "the core's tables break their invariants: \(broken.prefix(5).joined(separator: "; "))")
    }

    // MARK: - What the core assumes of its tables

    /// The facts about the tables that the core's verdicts rely on. Empty: all hold. Scripts/prove's proof needs one of
    /// them, the fast path's rows (the ACSL predicate `fast_rows` in core.c): on its hot path the core checks no index.
    /// For the rest the core checks every index against the counts in `sieve_tables`; these make those checks never fail.
    ///  - 16 opcode maps of 256 entries; every entry's pattern lists start inside the patterns and end in a catch-all
    ///    (allowed: every bit) at or before the last pattern; every pattern's form is a form or SIEVE_NO_FORM;
    ///  - a ModRM entry counts at most 5 bytes after it (SIB and disp32: the core reads it with & 7);
    ///  - a form's immediate is at most 8 bytes, its instance rules, implicit registers and refusal reason are in their
    ///    tables, and so are each instance rule's registers;
    ///  - the fast path's tables have their sizes, every opcode's row of 32 descriptors is in fast_descs, row 0 takes nothing.
    public static func invariantViolations(entries: [sieve_entry], patterns: [sieve_pattern], modrm: [UInt32], forms: [sieve_form],
                                           instanceRules: [sieve_instance_rule], conditional: [UInt16], ruleRegisters: [Int16],
                                           implicitRegisters: [Int16], reasonKinds: [UInt8], fast: FastTables) -> [String] {
        var broken: [String] = []
        if fast.table.count != Int(SIEVE_FAST_DESCS) + fast.descriptors.count { broken.append("the fast table's sections have other sizes") }
        if fast.descriptors.count < 32 || fast.descriptors.prefix(32).contains(where: { $0 != 0 }) { broken.append("fast_descs' row 0 takes something") }
        for (k, e) in fast.entries.enumerated() where Int(e >> 16) + 32 > fast.descriptors.count {
            broken.append("fast entry \(k): row \(e >> 16) of \(fast.descriptors.count) descriptors")
        }
        if entries.count != 16 * 256 { broken.append("\(entries.count) entries, not 16 maps of 256") }
        if modrm.count != 256 { broken.append("\(modrm.count) ModRM entries") }
        for (k, e) in entries.enumerated() {
            for start in [e.start.0, e.start.1, e.start.2] {
                if !patterns[min(Int(start), patterns.count)...].contains(where: { $0.allowed == ~0 }) {
                    broken.append("entry \(k): the patterns from \(start) have no catch-all")
                }
            }
        }
        for (k, p) in patterns.enumerated() where p.form != PatternLists.noForm && Int(p.form) >= forms.count {
            broken.append("pattern \(k): form \(p.form) of \(forms.count)")
        }
        for (k, m) in modrm.enumerated() where (m >> 24) & 15 > 5 { broken.append("ModRM \(k): \((m >> 24) & 15) bytes after it") }
        for (k, f) in forms.enumerated() {
            if f.imm_bytes > 8 { broken.append("form \(k): a \(f.imm_bytes)-byte immediate") }
            if Int(f.conditional_start) + Int(f.conditional_count) > conditional.count { broken.append("form \(k): instance rules past the end") }
            if Int(f.implicit_start) + Int(f.implicit_count) > implicitRegisters.count { broken.append("form \(k): implicit registers past the end") }
            if Int(f.forbidden) > reasonKinds.count { broken.append("form \(k): refusal \(f.forbidden) of \(reasonKinds.count)") }
        }
        for (k, c) in conditional.enumerated() where Int(c) >= instanceRules.count { broken.append("conditional \(k): rule \(c) of \(instanceRules.count)") }
        for (k, r) in instanceRules.enumerated() where Int(r.register_start) + Int(r.register_count) > ruleRegisters.count {
            broken.append("instance rule \(k): registers past the end")
        }
        return broken
    }

    // MARK: - Encodings of the instance rules (the core's `instance_matches`)

    /// An operands field no instruction has (bits 1 memory, 2 register).
    static let matchesNothing = 4

    static let fileCode: [OperandKind.RegisterClass: Int] = [
        .gpr8: 1, .gpr16: 2, .gpr32: 3, .gpr64: 4, .mmx: 5, .xmm: 6, .ymm: 7, .zmm: 8, .opmask: 9, .tile: 10,
        .x87: 11, .segment: 12, .control: 13, .debug: 14,
    ]

    /// A register name as the core numbers it: file * 32 + number (AH..BH: 15 * 32 + 4..7); any
    /// other name (rflags, tsc, ...) a number outside every register file.
    public static func registerID(_ name: String) -> Int {
        if let id = registerIDs[name] { return id }
        var hash = FNV1a()
        hash.add(name)
        return 16 * 32 + Int(hash.value % 480)
    }

    static let registerIDs: [String: Int] = {
        var ids: [String: Int] = [:]
        for (file, code) in fileCode.sorted(by: { $0.value < $1.value }) {
            for n in 0..<32 {
                if let name = Decoder.name(file, n, anyREX: true), ids[name] == nil {
                    ids[name] = code * 32 + (file == .mmx || file == .opmask || file == .tile || file == .x87 ? n & 7 : n)
                }
                if file == .gpr8, n >= 4, n < 8, let name = Decoder.name(file, n, anyREX: false) { ids[name] = 15 * 32 + n }
            }
        }
        return ids
    }()

    static func sizeBit(_ bits: Int) -> Int {
        [8: 1, 16: 2, 32: 4, 64: 8, 80: 16, 128: 32, 256: 64, 512: 128][bits] ?? 0
    }

    static func prefixBit(_ p: Selector.PrefixChoice) -> Int {
        switch p {
        case .lock: 1
        case .rep: 2
        case .repne: 4
        case .rex: 8
        case .rexW: 16
        case .operandSize: 32
        case .addressSize: 64
        case .cs: 128
        case .ds: 256
        case .es: 512
        case .ss: 1024
        case .fs: 2048
        case .gs: 4096
        case .redundant: 8192
        }
    }

    /// The data-operand size of the form's memory and register encodings, as `sizeBit`s.
    static func sizes(_ form: Form) -> (memory: Int, register: Int) {
        (Decoder.operandSize(form, memoryModRM: true).map(sizeBit) ?? 0, Decoder.operandSize(form, memoryModRM: false).map(sizeBit) ?? 0)
    }
}

/// The tables in memory that stays put, as the core reads them: built once per verifier.
final class CoreTableStorage: @unchecked Sendable {
    // Immutable after init; the buffers live as long as the storage.
    let tables: CoreTables
    private(set) var root = sieve_tables()
    private var buffers: [UnsafeMutableRawPointer] = []

    init(_ tables: CoreTables, fullPathOnly: Bool = false) {
        self.tables = tables
        func keep<T>(_ values: [T]) -> UnsafePointer<T> {
            let p = UnsafeMutablePointer<T>.allocate(capacity: max(1, values.count))
            _ = UnsafeMutableBufferPointer(start: p, count: values.count).initialize(from: values)
            buffers.append(UnsafeMutableRawPointer(p))
            return UnsafePointer(p)
        }
        root.entries = keep(tables.entries)
        root.patterns = keep(tables.patterns)
        root.modrm = keep(tables.modrm)
        root.forms = keep(tables.forms)
        root.instance_rules = keep(tables.instanceRules)
        root.conditional = keep(tables.conditional)
        root.rule_registers = keep(tables.ruleRegisters)
        root.implicit_registers = keep(tables.implicitRegisters)
        root.reason_kinds = keep(tables.reasonKinds)
        root.rewrites = keep(tables.rewrites)
        root.fast = keep(tables.fast.table)
        root.fast_count = UInt32(tables.fast.table.count)
        root.rewrite_count = UInt32(tables.rewrites.count)
        root.form_count = UInt32(tables.forms.count)
        root.pattern_count = UInt32(tables.patterns.count)
        root.instance_rule_count = UInt32(tables.instanceRules.count)
        root.conditional_count = UInt32(tables.conditional.count)
        root.rule_register_count = UInt32(tables.ruleRegisters.count)
        root.implicit_register_count = UInt32(tables.implicitRegisters.count)
        root.reason_count = UInt32(tables.reasonKinds.count)
        root.bundle_size = tables.bundleSize
        root.model_none = tables.modelNone ? 1 : 0
        root.calls_must_align = tables.callsMustAlign ? 1 : 0
        root.full_path_only = fullPathOnly ? 1 : 0
    }

    deinit { for b in buffers { b.deallocate() } }
}
