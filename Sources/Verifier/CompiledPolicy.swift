import Policy
import X86

/// A resolved policy compiled for verification: for every form of the database, the policy's
/// decision and what the sandbox model needs to know about it. Content-hashed: the same policy
/// and database give the same tables and the same hash.
public struct CompiledPolicy: Sendable {
    public enum Decision: UInt8, Sendable {
        case accept = 0, refuse = 1
        /// Instance fields decide: the engine asks the resolved policy.
        case conditional = 2
    }

    /// What the sandbox model knows about a form.
    public struct ModelFacts: OptionSet, Sendable, Hashable {
        public let rawValue: UInt32
        public init(rawValue: UInt32) { self.rawValue = rawValue }

        public static let directBranch = ModelFacts(rawValue: 1 << 0)
        public static let call = ModelFacts(rawValue: 1 << 1)
        public static let indirectBranch = ModelFacts(rawValue: 1 << 2)
        public static let ret = ModelFacts(rawValue: 1 << 3)
        /// String instruction reading %ds:(%rsi) / writing %es:(%rdi); MASKMOV writes %ds:(%rdi).
        public static let stringRSI = ModelFacts(rawValue: 1 << 4)
        public static let stringRDI = ModelFacts(rawValue: 1 << 5)
        /// NaCl's `nacl-amd64-zero-extends`: a 32-bit register result restricts that register.
        public static let zeroExtends = ModelFacts(rawValue: 1 << 6)
        /// LEA, NOPs and prefetches: a ModRM memory operand that accesses no memory.
        public static let noMemoryAccess = ModelFacts(rawValue: 1 << 7)
        /// Pushes, pops and calls: their %rsp update is the CPU's own.
        public static let stackEngine = ModelFacts(rawValue: 1 << 8)
        /// Writes a register operand or implicit register: checked for %r15, %rsp, %rbp.
        public static let writesRegisters = ModelFacts(rawValue: 1 << 9)
        /// XBEGIN: its fallback target is checked like a branch target.
        public static let xbegin = ModelFacts(rawValue: 1 << 10)
        /// A 64-bit MOV, ADD, OR, AND or LEA: the forms of NaCl's sanctioned %rsp/%rbp moves and
        /// re-basings, whose bytes the model then compares (a superset, so that none is missed).
        public static let sanctionedForm = ModelFacts(rawValue: 1 << 11)
    }

    public let policy: ResolvedPolicy
    public let database: ISADatabase
    public let model: SandboxSettings.Model
    public let bundleSize: Int
    public let callAlignment: SandboxSettings.Enforcement
    /// What the policy and the model decide for each form, as plain values: the engines read only this.
    public let plans: [FormPlan]
    /// FNV-1a over the plans, the rules and the parameters: what the generated verifier is named by.
    public let contentHash: UInt64
    /// The model's reasons, indexed by `FormPlan.forbidden - 1`.
    public let forbiddenReasons: [String]
    /// Whether some rule looks at redundant prefixes (the decoder may skip that analysis otherwise).
    public let needsRedundantPrefixes: Bool

    public var contentHashHex: String {
        let digits = String(contentHash, radix: 16)
        return String(repeating: "0", count: 16 - digits.count) + digits
    }

    public init(_ policy: ResolvedPolicy, model override: SandboxSettings.Model? = nil, database: ISADatabase = .shared) {
        self.policy = policy
        self.database = database
        model = override ?? policy.sandbox.model ?? .naclX86_64
        bundleSize = policy.sandbox.bundleSize ?? 32
        callAlignment = policy.sandbox.callAlignment ?? .warn
        var reasons: [String] = []
        var plans: [FormPlan] = []
        var hash = FNV1a()
        hash.add("sieve-1 \(database.version) \(model.rawValue) \(bundleSize) \(callAlignment.rawValue)")
        for form in database.forms {
            let decision: Decision
            switch policy.accepted.verdict(form.index) {
            case .accepted: decision = .accept
            case .refused: decision = .refuse
            case .partial: decision = .conditional
            }
            let rule = Int32(policy.accepted.decisions[form.index].unconditional ?? -1)
            let facts = Self.modelFacts(form)
            let reason = model == .naclX86_64 ? NaClRules.forbiddenReason(form) : nil
            var reasonIndex: UInt8 = 0
            if let reason {
                if let k = reasons.firstIndex(of: reason) { reasonIndex = UInt8(k + 1) } else {
                    reasons.append(reason)
                    reasonIndex = UInt8(reasons.count)
                }
            }
            plans.append(FormPlan(form, decision: decision, rule: rule, facts: facts, forbidden: reasonIndex))
            hash.add("\(form.id) \(decision.rawValue) \(facts.rawValue) \(reason ?? "-")")
        }
        self.plans = plans
        self.forbiddenReasons = reasons
        needsRedundantPrefixes = policy.rules.contains { $0.selector.prefixes?.contains(.redundant) ?? false }
            || policy.groups.user.values.joined().contains { $0.prefixes?.contains(.redundant) ?? false }
        for rule in policy.rules { hash.add("\(rule.effect.rawValue) \(rule.selector.canonicalDescription)") }
        contentHash = hash.value
    }

    static func modelFacts(_ form: Form) -> ModelFacts {
        var facts: ModelFacts = []
        let branchImmediate = form.immediates.contains { $0 == .rel8 || $0 == .rel16 || $0 == .rel32 }
        switch form.flow {
        case .jmp?, .jcc?: if branchImmediate { facts.insert(.directBranch) }
        case .call?: if branchImmediate { facts.formUnion([.directBranch, .call]) }
        case .ijmp?: facts.insert(.indirectBranch)
        case .icall?: facts.formUnion([.indirectBranch, .call])
        case .ret?: facts.insert(.ret)
        case .xbegin?: if branchImmediate { facts.formUnion([.directBranch, .xbegin]) }
        default: break
        }
        let implicit = form.operands.filter { $0.kind.location == .implicitMemory }.map(\.kind.name)
        if form.classes.contains(.string) {
            if implicit.contains("seg_rsi") { facts.insert(.stringRSI) }
            if implicit.contains("es_rdi") { facts.insert(.stringRDI) }
        }
        if implicit.contains("seg_rdi") && form.mnemonic.contains("maskmov") { facts.insert(.stringRDI) }
        if NaClRules.zeroExtendingMnemonics.contains(form.mnemonic) { facts.insert(.zeroExtends) }
        if form.mnemonic == "lea" || form.classes.contains(.nop) || form.classes.contains(.reservedNop)
            || form.mnemonic.hasPrefix("prefetch") || form.mnemonic == "cldemote" {
            facts.insert(.noMemoryAccess)
        }
        if form.classes.contains(.stack) { facts.insert(.stackEngine) }
        if form.encoding == .legacy && form.operandSize == 64 && ["mov", "add", "or", "and", "lea"].contains(form.mnemonic) {
            facts.insert(.sanctionedForm)
        }
        if form.operands.contains(where: { $0.access.writes && $0.kind.registerClass != .none }) || !form.implicitRegisters.isEmpty {
            facts.insert(.writesRegisters)
        }
        return facts
    }
}

/// 64-bit FNV-1a: small, deterministic, good enough to name a table's content.
struct FNV1a {
    private(set) var value: UInt64 = 0xcbf2_9ce4_8422_2325

    mutating func add(_ text: String) {
        for byte in text.utf8 {
            value ^= UInt64(byte)
            value = value &* 0x0000_0100_0000_01B3
        }
        value ^= 0x0A
        value = value &* 0x0000_0100_0000_01B3
    }
}

/// What the engines need to know about one form, as plain values (no references, no strings).
public struct FormPlan: Sendable, Equatable {
    public var decision: CompiledPolicy.Decision
    /// 0: the model allows the form; k: it refuses it for `forbiddenReasons[k - 1]`.
    public var forbidden: UInt8
    public var facts: CompiledPolicy.ModelFacts
    public var rule: Int32
    /// Up to three general-register operands the form writes: `WriteSlot` raw values (0: none).
    public var writes: (UInt8, UInt8, UInt8)
    /// Implicit writes: bit 0 %r15, bit 1 %rbp, bit 2 %rsp.
    public var implicitWrites: UInt8
    public var implicitMemory: Bool
    public var vsib: Bool

    /// Whether NaCl's model refuses every instance whatever the policy says: its deny list, RET,
    /// and implicit writes of %r15, %rbp, or of %rsp outside the stack engine.
    public var alwaysRefusedByNaCl: Bool {
        forbidden != 0 || facts.contains(.ret) || implicitWrites & 3 != 0 || implicitWrites & 4 != 0 && !facts.contains(.stackEngine)
    }

    public static func == (a: FormPlan, b: FormPlan) -> Bool {
        a.decision == b.decision && a.forbidden == b.forbidden && a.facts == b.facts && a.rule == b.rule
            && a.writes == b.writes && a.implicitWrites == b.implicitWrites && a.implicitMemory == b.implicitMemory && a.vsib == b.vsib
    }

    /// A written general register: where it is encoded (low nibble) and its width (high nibble).
    public enum WriteSlot {
        public static let modrmReg: UInt8 = 1, modrmRM: UInt8 = 2, opcodeRegister: UInt8 = 3, vvvv: UInt8 = 4, rax: UInt8 = 5
        public static let width8: UInt8 = 0x10, width16: UInt8 = 0x20, width32: UInt8 = 0x30, width64: UInt8 = 0x40
    }

    init(_ form: Form, decision: CompiledPolicy.Decision, rule: Int32, facts: CompiledPolicy.ModelFacts, forbidden: UInt8) {
        self.decision = decision
        self.rule = rule
        self.facts = facts
        self.forbidden = forbidden
        var slots: [UInt8] = []
        for operand in form.operands where operand.access.writes {
            let width: UInt8
            switch operand.kind.registerClass {
            case .gpr8: width = WriteSlot.width8
            case .gpr16: width = WriteSlot.width16
            case .gpr32: width = WriteSlot.width32
            case .gpr64: width = WriteSlot.width64
            default: continue
            }
            let place: UInt8
            switch operand.kind.location {
            case .modrmReg: place = WriteSlot.modrmReg
            case .modrmRegister, .modrmRegisterOrMemory: place = WriteSlot.modrmRM
            case .opcodeRegister: place = WriteSlot.opcodeRegister
            case .vvvv: place = WriteSlot.vvvv
            default: continue  // fixed registers (AL, EAX, ...) are never %r15, %rsp or %rbp
            }
            slots.append(width | place)
        }
        precondition(slots.count <= 3, "\(form.id) writes more than three registers")
        slots += [0, 0, 0]
        writes = (slots[0], slots[1], slots[2])
        var implicit: UInt8 = 0
        for register in form.implicitRegisters where register.access.writes {
            switch register.register {
            case "r15", "r15d", "r15w", "r15b": implicit |= 1
            case "rbp", "ebp", "bp", "bpl": implicit |= 2
            case "rsp", "esp", "sp", "spl": implicit |= 4
            default: break
            }
        }
        implicitWrites = implicit
        implicitMemory = form.operands.contains { $0.kind.location == .implicitMemory }
        vsib = form.classes.contains(.vsib)
    }
}
