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
    }

    public let policy: ResolvedPolicy
    public let database: ISADatabase
    public let model: SandboxSettings.Model
    public let bundleSize: Int
    public let callAlignment: SandboxSettings.Enforcement
    public let decisions: [Decision]
    /// For refused forms: the deciding rule's index (-1: nothing accepts the form).
    public let refusingRule: [Int32]
    public let facts: [ModelFacts]
    /// Why the model refuses a form whatever the policy says (nil: it does not).
    public let forbidden: [String?]
    /// FNV-1a over every table above and the parameters: what the generated verifier is named by.
    public let contentHash: UInt64

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
        var decisions: [Decision] = [], refusing: [Int32] = [], facts: [ModelFacts] = [], forbidden: [String?] = []
        let ruleIndex = Dictionary(policy.rules.enumerated().map { ("\($0.element.file):\($0.element.mark.line):\($0.element.mark.column)", $0.offset) },
                                   uniquingKeysWith: { a, _ in a })
        for form in database.forms {
            switch policy.accepted.verdict(form.index) {
            case .accepted: decisions.append(.accept)
            case .refused: decisions.append(.refuse)
            case .partial: decisions.append(.conditional)
            }
            let rule = policy.accepted.decidingRule(form.index)
            refusing.append(rule.map { Int32(ruleIndex["\($0.file):\($0.mark.line):\($0.mark.column)"] ?? -1) } ?? -1)
            facts.append(Self.modelFacts(form))
            forbidden.append(model == .naclX86_64 ? NaClRules.forbiddenReason(form) : nil)
        }
        self.decisions = decisions
        self.refusingRule = refusing
        self.facts = facts
        self.forbidden = forbidden
        var hash = FNV1a()
        hash.add("sieve-1 \(database.version) \(model.rawValue) \(bundleSize) \(callAlignment.rawValue)")
        for i in database.forms.indices {
            hash.add("\(database.forms[i].id) \(decisions[i].rawValue) \(facts[i].rawValue) \(forbidden[i] ?? "-")")
        }
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
