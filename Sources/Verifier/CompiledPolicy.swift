import Policy
import SieveCore
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

    /// What the sandbox model knows about a form: the core's `enum sieve_fact`, whose values are
    /// defined once, in C (`sieve_core.h`).
    public struct ModelFacts: OptionSet, Sendable, Hashable {
        public let rawValue: UInt32
        public init(rawValue: UInt32) { self.rawValue = rawValue }
        init(_ fact: sieve_fact) { rawValue = fact.rawValue }

        public static let directBranch = ModelFacts(SIEVE_F_DIRECT)
        public static let call = ModelFacts(SIEVE_F_CALL)
        public static let indirectBranch = ModelFacts(SIEVE_F_INDIRECT)
        public static let ret = ModelFacts(SIEVE_F_RET)
        /// String instruction reading %ds:(%rsi) / writing %es:(%rdi); MASKMOV writes %ds:(%rdi).
        public static let stringRSI = ModelFacts(SIEVE_F_RSI)
        public static let stringRDI = ModelFacts(SIEVE_F_RDI)
        /// NaCl's `nacl-amd64-zero-extends`: a 32-bit register result restricts that register.
        public static let zeroExtends = ModelFacts(SIEVE_F_ZERO_EXTENDS)
        /// LEA, NOPs and prefetches: a ModRM memory operand that accesses no memory.
        public static let noMemoryAccess = ModelFacts(SIEVE_F_NO_MEMORY)
        /// Pushes, pops and calls: their %rsp update is the CPU's own.
        public static let stackEngine = ModelFacts(SIEVE_F_STACK)
        /// Writes a general register at an encoded place: checked for %r15, %rsp, %rbp.
        public static let writesRegisters = ModelFacts(SIEVE_F_WRITES)
        /// XBEGIN: its fallback target is checked like a branch target.
        public static let xbegin = ModelFacts(SIEVE_F_XBEGIN)
        /// Accesses its ModRM memory operand: base and index checked.
        public static let memoryAccess = ModelFacts(SIEVE_F_MEMORY)
        /// BT, BTS, BTR, BTC with a register bit offset: refused with a memory operand.
        public static let bitOffset = ModelFacts(SIEVE_F_BIT_OFFSET)
        /// Its immediate, displacement or branch offset may change in a code replacement.
        public static let modifiable = ModelFacts(SIEVE_F_MODIFIABLE)
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
    /// The model's refusals (reason and finding kind), indexed by `FormPlan.forbidden - 1`.
    public let refusals: [NaClModel.Refusal]
    /// The model's reasons, indexed by `FormPlan.forbidden - 1`.
    public var forbiddenReasons: [String] { refusals.map(\.reason) }
    /// Same-length replacements for the forms the policy refuses (`sieve patch`), sorted by form.
    public let rewrites: [Rewrite]
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
        var refusals: [NaClModel.Refusal] = []
        var plans: [FormPlan] = []
        var hash = FNV1a()
        hash.add("sieve-2 \(database.version) \(model.rawValue) \(bundleSize) \(callAlignment.rawValue)")
        for form in database.forms {
            let decision: Decision
            switch policy.accepted.verdict(form.index) {
            case .accepted: decision = .accept
            case .refused: decision = .refuse
            case .partial: decision = .conditional
            }
            let rule = Int32(policy.accepted.decisions[form.index].unconditional ?? -1)
            let model = NaClModel.classify(form)
            var forbidden: UInt8 = 0
            if self.model == .naclX86_64, let refusal = model.refusal {
                if let k = refusals.firstIndex(of: refusal) { forbidden = UInt8(k + 1) } else {
                    refusals.append(refusal)
                    forbidden = UInt8(refusals.count)
                }
            }
            plans.append(FormPlan(decision: decision, rule: rule, model: model, forbidden: forbidden))
            hash.add("\(form.id) \(decision.rawValue) \(model.facts.rawValue) \(model.writes) \(model.refusal?.reason ?? "-")")
        }
        self.plans = plans
        self.refusals = refusals
        rewrites = Rewrite.derive(policy, plans, database)
        for r in rewrites { hash.add("rewrite \(database.forms[r.form].id) \(r.action) \(r.to.map { database.forms[$0].id } ?? "-")") }
        needsRedundantPrefixes = policy.rules.contains { $0.selector.prefixes?.contains(.redundant) ?? false }
            || policy.groups.user.values.joined().contains { $0.prefixes?.contains(.redundant) ?? false }
        for rule in policy.rules { hash.add("\(rule.effect.rawValue) \(rule.selector.canonicalDescription)") }
        contentHash = hash.value
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

/// What the core needs to know about one form, as plain values (no references, no strings).
public struct FormPlan: Sendable, Equatable {
    public var decision: CompiledPolicy.Decision
    /// 0: the model allows the form; k: it refuses it for `refusals[k - 1]`.
    public var forbidden: UInt8
    public var facts: CompiledPolicy.ModelFacts
    public var rule: Int32
    /// Up to three general registers the form writes: `WriteSlot` values (0: none).
    public var writes: (UInt8, UInt8, UInt8)
    public var implicitMemory: Bool

    /// Whether NaCl's model refuses every instance whatever the policy says.
    public var alwaysRefusedByNaCl: Bool { forbidden != 0 }

    public static func == (a: FormPlan, b: FormPlan) -> Bool {
        a.decision == b.decision && a.forbidden == b.forbidden && a.facts == b.facts && a.rule == b.rule
            && a.writes == b.writes && a.implicitMemory == b.implicitMemory
    }

    /// A written general register: where it is encoded (low nibble) and its width (high nibble),
    /// the core's `enum sieve_write_slot`.
    public enum WriteSlot {
        public static let modrmReg = UInt8(SIEVE_W_MODRM_REG.rawValue), modrmRM = UInt8(SIEVE_W_MODRM_RM.rawValue)
        public static let opcodeRegister = UInt8(SIEVE_W_OPCODE.rawValue), vvvv = UInt8(SIEVE_W_VVVV.rawValue)
        public static let rax = UInt8(SIEVE_W_RAX.rawValue)
        public static let width8 = UInt8(SIEVE_W_8.rawValue), width16 = UInt8(SIEVE_W_16.rawValue)
        public static let width32 = UInt8(SIEVE_W_32.rawValue), width64 = UInt8(SIEVE_W_64.rawValue)
        /// On the form's first written register (its destination) when the form zero-extends.
        public static let zeroExtends = UInt8(SIEVE_W_ZERO_EXTENDS.rawValue)
    }

    init(decision: CompiledPolicy.Decision, rule: Int32, model: NaClModel.Classification, forbidden: UInt8) {
        self.decision = decision
        self.rule = rule
        self.facts = model.facts
        self.forbidden = forbidden
        let slots = model.writes + [0, 0, 0]
        writes = (slots[0], slots[1], slots[2])
        implicitMemory = model.implicitMemory
    }
}
