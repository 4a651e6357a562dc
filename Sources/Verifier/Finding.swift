import Policy
import X86

/// Why a verifier refuses code: the policy (`banned`), the decoder (`invalid`), or one rule of
/// the sandbox model each.
public enum FindingKind: String, Sendable, CaseIterable, Comparable {
    /// A valid instruction the policy refuses.
    case banned
    /// Not an instruction, or an encoding the decoder refuses (vendor-dependent, ignored REX).
    case invalid
    /// The model refuses it whatever the policy trusts: FS/GS overrides, 0x67 on memory,
    /// segment/control/debug writes, far transfers, system calls, VSIB, implicit memory, and
    /// legacy prefixes the instruction ignores (outside NaCl's padding NOPs).
    case sandboxForbidden = "sandbox-forbidden"
    /// An instruction crosses a bundle boundary.
    case bundleCrossing = "bundle-crossing"
    /// A direct jump or call lands inside an instruction or a sanctioned sequence, or outside
    /// the code on an address that is not bundle-aligned.
    case badJumpTarget = "bad-jump-target"
    /// An indirect jump or call outside `and $~(bundle-1),%eXX; add %r15,%rXX; jmp *%rXX`, or a RET.
    case unsafeIndirectBranch = "unsafe-indirect-branch"
    /// A write to %r15, the sandbox base.
    case reservedRegisterWrite = "reserved-register-write"
    /// A write to %rsp or %rbp outside the sanctioned sequences, or one left pending.
    case stackPointerWrite = "stack-pointer-write"
    /// A memory operand whose base is not %r15, %rsp, %rbp or %rip.
    case unsafeMemoryOperand = "unsafe-memory-operand"
    /// An index register not zero-extended by the immediately preceding instruction.
    case unrestrictedIndex = "unrestricted-index"
    /// A string instruction (or MASKMOV) outside its %rsi/%rdi sandboxing sequence.
    case stringOutsideSequence = "string-outside-sequence"
    /// A call that does not end at a bundle end (a finding only when the policy refuses it).
    case callAlignment = "call-alignment"
    /// The code does not start on a bundle boundary; a region is not whole bundles of its module,
    /// or is already verified code (a replacement: not verified code).
    case layout
    /// A code replacement changes what may not change: an instruction boundary, a sanctioned
    /// sequence, an instruction that is not modifiable, or bytes other than a modifiable
    /// instruction's immediate, displacement or branch offset; or the old code does not verify.
    case replacement

    public static func < (a: FindingKind, b: FindingKind) -> Bool { a.rawValue < b.rawValue }

    /// Whether the rule judges an instruction by the code around it (a layout rule), so that
    /// the same bytes may be accepted in another place: `explain` says so rather than calling
    /// the instruction itself refused.
    public var needsSurroundingCode: Bool {
        switch self {
        case .banned, .invalid, .sandboxForbidden, .reservedRegisterWrite, .unsafeMemoryOperand: false
        case .bundleCrossing, .badJumpTarget, .unsafeIndirectBranch, .stackPointerWrite, .unrestrictedIndex,
             .stringOutsideSequence, .callAlignment, .layout, .replacement: true
        }
    }
}

/// One refusal (or warning) at one place in the code.
public struct Finding: Sendable, Equatable {
    public let kind: FindingKind
    /// From the start of the code.
    public let offset: Int
    public let length: Int
    /// The form, when the bytes decode.
    public let formIndex: Int?
    /// What exactly is wrong, in a sentence.
    public let message: String
    /// For `banned`: the policy rule that refused it (nil: nothing trusted it).
    public let ruleIndex: Int?

    public init(_ kind: FindingKind, offset: Int, length: Int, form: Int?, _ message: String, rule: Int? = nil) {
        self.kind = kind
        self.offset = offset
        self.length = length
        self.formIndex = form
        self.message = message
        self.ruleIndex = rule
    }
}

/// The verdict on one piece of code.
public struct VerificationReport: Sendable {
    public var findings: [Finding] = []
    /// Rules set to warn (NaCl's call alignment): listed apart, never findings.
    public var warnings: [Finding] = []
    public var instructions = 0
    public var bytes = 0

    public var accepted: Bool { findings.isEmpty }
}

/// What a streaming verification saw (`Verifier.verify(_:base:maxFindings:tally:onFinding:)`):
/// complete counts, and how many findings and warnings were passed on before the cap.
public struct VerificationCounts: Sendable, Equatable {
    public var instructions = 0
    public var bytes = 0
    /// Every refusal, listed or not: the verdict.
    public var findings = 0
    /// Every warning, listed or not.
    public var warnings = 0
    /// How many findings, and warnings, were passed on (at most the cap each).
    public var listedFindings = 0
    public var listedWarnings = 0

    public init() {}

    public var accepted: Bool { findings == 0 }
    /// Some finding or warning was counted but not passed on.
    public var truncated: Bool { findings > listedFindings || warnings > listedWarnings }
}
