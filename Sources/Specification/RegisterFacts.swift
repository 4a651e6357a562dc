/// What the specification knows about one general-purpose register between two instructions.
/// The abstract interpreter starts every bundle from `RegisterFacts.bundleStart` because a bundle
/// start may be reached from anywhere (an indirect jump, a direct jump from another bundle).
enum Fact: Equatable, Sendable {
    /// Anything at all.
    case unknown
    /// Bits 32-63 are zero: the previous instruction wrote the register as an explicit 32-bit
    /// destination, which zero-extends in 64-bit mode. Only the next instruction may rely on it.
    case zeroExtended
    /// Zero-extended and a multiple of the bundle size (`and $-32,%eXX`). Only the next instruction
    /// may rely on it.
    case zeroExtendedAligned
    /// %r15 plus a 32-bit value: inside the sandbox, or (for %rsp after pushes and pops) within one
    /// guard-page step of it, so any disp32 and any 32-bit index times 8 stay in the 40 GiB guards.
    case sandboxAddress
    /// %r15 plus a bundle-aligned 32-bit value, made by the previous instruction: a bundle start
    /// inside the sandbox, the only indirect jump target. Ages into `sandboxAddress`.
    case codeAddress

    var isSandboxAddress: Bool { self == .sandboxAddress || self == .codeAddress }
    var isZeroExtended: Bool { self == .zeroExtended || self == .zeroExtendedAligned }

    /// What remains true one instruction later when the register is not written: zero-extension
    /// is NaCl's one-instruction promise, a fresh code address is an ordinary sandbox address.
    var aged: Fact {
        switch self {
        case .zeroExtended, .zeroExtendedAligned: .unknown
        case .codeAddress: .sandboxAddress
        case .unknown, .sandboxAddress: self
        }
    }
}

struct RegisterFacts: Equatable, Sendable {
    var facts: [Fact]

    /// At a bundle start %rsp and %rbp hold sandbox addresses (the invariant every bundle end
    /// re-establishes); nothing is known of the others. %r15 is the sandbox base, never written,
    /// and is handled by its own rules, not by a fact.
    static let bundleStart: RegisterFacts = {
        var facts = [Fact](repeating: .unknown, count: 16)
        facts[GPR.rsp] = .sandboxAddress
        facts[GPR.rbp] = .sandboxAddress
        return RegisterFacts(facts: facts)
    }()

    subscript(_ number: Int) -> Fact {
        get { facts[number] }
        set { facts[number] = newValue }
    }
}
